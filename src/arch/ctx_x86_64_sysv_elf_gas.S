/*
 * braid__ctx_switch(braid__ctx *from, braid__ctx *to) for x86-64, System V
 * ABI, ELF, GNU as.
 *
 * Only the callee-saved registers are saved, on the suspended stack; the
 * caller of braid__ctx_switch has already spilled everything else.  Layout of
 * a suspended stack, from the saved stack pointer upwards:
 *
 *     sp + 0   r15
 *     sp + 8   r14
 *     sp + 16  r13
 *     sp + 24  r12
 *     sp + 32  rbx
 *     sp + 40  rbp
 *     sp + 48  return address
 *
 * braid__ctx_make (arch/ctx.c) builds the same layout for a new context, with
 * r12 = entry, r13 = arg and the return address pointing at
 * braid__ctx_start, which calls entry(arg).
 */
    .text
    .p2align 4
    .globl  braid__ctx_switch
    .hidden braid__ctx_switch
    .type   braid__ctx_switch, @function
braid__ctx_switch:
    .cfi_startproc
    pushq   %rbp
    .cfi_adjust_cfa_offset 8
    pushq   %rbx
    .cfi_adjust_cfa_offset 8
    pushq   %r12
    .cfi_adjust_cfa_offset 8
    pushq   %r13
    .cfi_adjust_cfa_offset 8
    pushq   %r14
    .cfi_adjust_cfa_offset 8
    pushq   %r15
    .cfi_adjust_cfa_offset 8
    movq    %rsp, (%rdi)
    movq    (%rsi), %rsp
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    ret
    .cfi_endproc
    .size   braid__ctx_switch, .-braid__ctx_switch

/* First frame of every new context.  The stack is 16-byte aligned here, as
 * the call below requires.  Marking the return address undefined ends
 * debugger and unwinder backtraces at this frame. */
    .p2align 4
    .globl  braid__ctx_start
    .hidden braid__ctx_start
    .type   braid__ctx_start, @function
braid__ctx_start:
    .cfi_startproc
    .cfi_undefined rip
    movq    %r13, %rdi
    callq   *%r12
    ud2
    .cfi_endproc
    .size   braid__ctx_start, .-braid__ctx_start

/* braid__ctx_jump(top, entry, arg): abandon the running context and call
 * entry(arg) with the stack pointer at top, as braid__ctx_start would on a
 * fresh context.  Nothing is saved: the caller's stack is being reused. */
    .p2align 4
    .globl  braid__ctx_jump
    .hidden braid__ctx_jump
    .type   braid__ctx_jump, @function
braid__ctx_jump:
    .cfi_startproc
    .cfi_undefined rip
    movq    %rdi, %rsp
    xorl    %ebp, %ebp
    movq    %rdx, %rdi
    callq   *%rsi
    ud2
    .cfi_endproc
    .size   braid__ctx_jump, .-braid__ctx_jump

    .section .note.GNU-stack,"",@progbits
