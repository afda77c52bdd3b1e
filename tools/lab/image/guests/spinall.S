/*
 * A guest that is busy on every vCPU: the boot CPU wakes the other vCPUs
 * (INIT, then two start-up IPIs through the local APIC) into a two-byte
 * real-mode loop at 0x8000, then loops itself. Each vCPU burns one host CPU,
 * so a guest's demand is its vCPU count, as on a real busy host.
 */
        .section .text
        .align 4
        .long 0x1BADB002
        .long 0
        .long -0x1BADB002

        .set LAPIC_SVR, 0xFEE000F0
        .set LAPIC_ICR_LOW, 0xFEE00300
        .set LAPIC_ICR_HIGH, 0xFEE00310
        .set TRAMPOLINE, 0x8000

        .globl _start
_start:
        cli
        movw $0xFEEB, TRAMPOLINE            /* "jmp ." (EB FE) where the APs start */
        movl LAPIC_SVR, %eax
        orl $0x100, %eax                    /* software-enable the local APIC */
        movl %eax, LAPIC_SVR
        movl $0, LAPIC_ICR_HIGH
        movl $0x000C4500, LAPIC_ICR_LOW     /* INIT to all but self */
        call delay
        movl $0x000C4608, LAPIC_ICR_LOW     /* start-up IPI, vector 0x08 = 0x8000 */
        call delay
        movl $0x000C4608, LAPIC_ICR_LOW     /* second start-up IPI, as the MP spec asks */
1:      jmp 1b

delay:
        movl $2000000, %ecx
2:      loop 2b
        ret
