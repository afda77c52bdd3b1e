/*
 * A busy guest for contention measurements: the same multiboot header as
 * halt.S, but the boot CPU loops forever and burns one host CPU.
 * Not used by the stock lab guests.
 */
        .section .text
        .align 4
        .long 0x1BADB002
        .long 0
        .long -0x1BADB002

        .globl _start
_start:
        cli
1:      jmp 1b
