/*
 * braid__ctx_switch(braid__ctx *from, braid__ctx *to) for aarch64, AAPCS64,
 * ELF, GNU as.
 *
 * Saves the callee-saved registers x19-x29, the link register x30 and the
 * low halves of v8-v15 (d8-d15) on the suspended stack.  Layout, from the
 * saved stack pointer upwards:
 *
 *     sp + 0    x19  x20
 *     sp + 16   x21  x22
 *     sp + 32   x23  x24
 *     sp + 48   x25  x26
 *     sp + 64   x27  x28
 *     sp + 80   x29  x30 (return address)
 *     sp + 96   d8   d9
 *     sp + 112  d10  d11
 *     sp + 128  d12  d13
 *     sp + 144  d14  d15
 *     sp + 160  (padding to keep sp 16-byte aligned)
 *
 * braid__ctx_make (arch/ctx.c) builds a new context with x19 = entry,
 * x20 = arg and x30 = braid__ctx_start.
 */
    .text
    .p2align 4
    .globl  braid__ctx_switch
    .hidden braid__ctx_switch
    .type   braid__ctx_switch, %function
braid__ctx_switch:
    .cfi_startproc
    sub     sp, sp, #176
    .cfi_adjust_cfa_offset 176
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    stp     d8,  d9,  [sp, #96]
    stp     d10, d11, [sp, #112]
    stp     d12, d13, [sp, #128]
    stp     d14, d15, [sp, #144]
    mov     x9, sp
    str     x9, [x0]
    ldr     x9, [x1]
    mov     sp, x9
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldp     d8,  d9,  [sp, #96]
    ldp     d10, d11, [sp, #112]
    ldp     d12, d13, [sp, #128]
    ldp     d14, d15, [sp, #144]
    add     sp, sp, #176
    .cfi_adjust_cfa_offset -176
    ret
    .cfi_endproc
    .size   braid__ctx_switch, .-braid__ctx_switch

/* First frame of every new context; backtraces end here. */
    .p2align 4
    .globl  braid__ctx_start
    .hidden braid__ctx_start
    .type   braid__ctx_start, %function
braid__ctx_start:
    .cfi_startproc
    .cfi_undefined x30
    mov     x0, x20
    blr     x19
    brk     #0
    .cfi_endproc
    .size   braid__ctx_start, .-braid__ctx_start

/* braid__ctx_jump(top, entry, arg): abandon the running context and call
 * entry(arg) with the stack pointer at top, as braid__ctx_start would on a
 * fresh context.  Nothing is saved: the caller's stack is being reused. */
    .p2align 4
    .globl  braid__ctx_jump
    .hidden braid__ctx_jump
    .type   braid__ctx_jump, %function
braid__ctx_jump:
    .cfi_startproc
    .cfi_undefined x30
    mov     sp, x0
    mov     x29, #0
    mov     x0, x2
    blr     x1
    brk     #0
    .cfi_endproc
    .size   braid__ctx_jump, .-braid__ctx_jump

    .section .note.GNU-stack,"",%progbits
