/*
 * The lab's idle guest: a multiboot kernel that disables interrupts and
 * halts. QEMU loads it through <os><kernel>; each vCPU then sleeps in HLT,
 * so a guest costs almost no host CPU.
 */
        .section .text
        .align 4
        .long 0x1BADB002                /* multiboot magic */
        .long 0                         /* flags: nothing requested */
        .long -0x1BADB002               /* checksum: magic + flags + this = 0 */

        .globl _start
_start:
        cli
1:      hlt
        jmp 1b
