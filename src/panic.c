#include "panic.h"
#include "blocking.h"
#include "sched.h"
#include "util.h"

#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

/* ---- reports --------------------------------------------------------------- */

static braid__panic_info oom_info = {
    .is_static = true,
    .message = "out of memory while recording a panic",
};

braid__panic_info *braid__panic_info_new(const char *file, int line, const char *fmt, va_list ap)
{
    braid__panic_info *info = braid__malloc(sizeof *info);
    if (!info)
        return &oom_info;
    info->is_static = false;
    info->file = file;
    info->line = line;
    int saved = errno;
    vsnprintf(info->message, sizeof info->message, fmt ? fmt : "", ap);
    errno = saved;
    return info;
}

braid__panic_info *braid__panic_info_fmt(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    braid__panic_info *info = braid__panic_info_new(file, line, fmt, ap);
    va_end(ap);
    return info;
}

void braid__panic_info_free(braid__panic_info *info)
{
    if (info && !info->is_static)
        free(info);
}

void braid__panic_info_fill(const braid__panic_info *info, braid_outcome *out, size_t size)
{
    out->file = info->file;
    out->line = info->line;
    if (size > offsetof(braid_outcome, message)) {
        size_t room = BRAID_MIN(size - offsetof(braid_outcome, message), sizeof out->message);
        snprintf(out->message, room, "%s", info->message);
    }
}

static void default_hook(uint64_t id, const char *name, const braid_outcome *o, void *user)
{
    (void)user;
    char line[512];
    char where[160] = "";
    if (o->file)
        snprintf(where, sizeof where, " at %s:%d", o->file, o->line);
    snprintf(line, sizeof line, "braid: task %llu%s%s%s panicked%s: %s\n", (unsigned long long)id,
             name && *name ? " (" : "", name && *name ? name : "", name && *name ? ")" : "", where,
             o->message);
    braid__write_stderr(line);
}

void braid__panic_report(braid_runtime *rt, uint64_t id, const char *name,
                         const braid__panic_info *info)
{
    braid_outcome o = BRAID_OUTCOME_INIT;
    o.status = BRAID_PANICKED;
    braid__panic_info_fill(info, &o, sizeof o);
    if (rt && rt->cfg.panic_hook)
        rt->cfg.panic_hook(id, name, &o, rt->cfg.panic_hook_arg);
    else
        default_hook(id, name, &o, NULL);
}

/* ---- panicking ------------------------------------------------------------- */

void braid__panic_unwind(braid__task *t)
{
    t->panicking = true;
    t->shield = true;
    braid_defer *d;
    while ((d = t->defers)) {
        t->defers = d->next; /* popped first: a panic inside it moves on */
        d->fn(d->arg);
    }
    braid__task_exit(t, BRAID_PANICKED, NULL);
}

void braid_panic_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    braid__task *t = braid__task_current();
    if (!t && braid__blocking_in_job()) {
        /* fn of braid_spawn_blocking: the panic ends the job, whose task
         * then ends as panicked with this report. */
        va_start(ap, fmt);
        braid__panic_info *info = braid__panic_info_new(file, line, fmt, ap);
        va_end(ap);
        braid__blocking_panic(info);
    }
    if (!t) {
        char msg[512];
        int n = snprintf(msg, sizeof msg, "braid: panic outside a task at %s:%d: ",
                         file ? file : "?", line);
        va_start(ap, fmt);
        if (fmt && n > 0 && (size_t)n < sizeof msg)
            vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
        va_end(ap);
        braid__write_stderr(msg);
        braid__write_stderr("\n");
        abort();
    }
    if (!t->panic) { /* the first message wins */
        va_start(ap, fmt);
        t->panic = braid__panic_info_new(file, line, fmt, ap);
        va_end(ap);
    }
    braid__panic_unwind(t);
}

/* ---- fault isolation ------------------------------------------------------ */

struct braid__extra_stack {
    void *slot;
    struct braid__extra_stack *next;
};

#define MAX_RANGES 16
#define RESCUE_SIZE ((size_t)64 * 1024)

static const int fault_signals[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL };
#define NFAULT (sizeof fault_signals / sizeof fault_signals[0])

/* Code ranges in which a fault is never converted. */
static struct {
    uintptr_t lo, hi;
} ranges[MAX_RANGES];
static int nranges;
static bool can_isolate, found_libc;

static pthread_mutex_t fault_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned fault_users;
static struct sigaction old_action[NFAULT];
static bool installed[NFAULT];

/* The linker defines these around the braid_text section, which holds all
 * of libbraid's code (the build renames each object's .text). */
extern const char __start_braid_text[] __attribute__((weak, visibility("hidden")));
extern const char __stop_braid_text[] __attribute__((weak, visibility("hidden")));

static void add_range(uintptr_t lo, uintptr_t hi)
{
    if (nranges < MAX_RANGES && lo < hi) {
        ranges[nranges].lo = lo;
        ranges[nranges].hi = hi;
        nranges++;
    }
}

static int collect_object(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    (void)data;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    static const char *const excluded[] = { "libc.so", "ld-linux", "libpthread.so", "libgcc_s.so",
                                            "libbraid" };
    bool match = false;
    for (size_t i = 0; i < sizeof excluded / sizeof excluded[0]; i++)
        if (strncmp(base, excluded[i], strlen(excluded[i])) == 0)
            match = true;
    if (!match)
        return 0;
    if (strncmp(base, "libc.so", 7) == 0)
        found_libc = true;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X))
            add_range(info->dlpi_addr + ph->p_vaddr, info->dlpi_addr + ph->p_vaddr + ph->p_memsz);
    }
    return 0;
}

static bool pc_excluded(uintptr_t pc)
{
    for (int i = 0; i < nranges; i++)
        if (pc >= ranges[i].lo && pc < ranges[i].hi)
            return true;
    return false;
}

#if defined(__x86_64__)
#define UC_PC(uc) ((uintptr_t)(uc)->uc_mcontext.gregs[REG_RIP])
#define UC_SP(uc) ((uintptr_t)(uc)->uc_mcontext.gregs[REG_RSP])
#elif defined(__aarch64__)
#define UC_PC(uc) ((uintptr_t)(uc)->uc_mcontext.pc)
#define UC_SP(uc) ((uintptr_t)(uc)->uc_mcontext.sp)
#endif

#ifdef UC_PC
/* Make sigreturn resume fn() on the rescue stack, as if it had been called. */
static void redirect(ucontext_t *uc, uintptr_t top, void (*fn)(void))
{
    top &= ~(uintptr_t)15;
#if defined(__x86_64__)
    top -= sizeof(uintptr_t);
    *(uintptr_t *)top = 0; /* a null return address ends backtraces */
    uc->uc_mcontext.gregs[REG_RSP] = (greg_t)top;
    uc->uc_mcontext.gregs[REG_RIP] = (greg_t)fn;
    uc->uc_mcontext.gregs[REG_RBP] = 0;
#elif defined(__aarch64__)
    uc->uc_mcontext.sp = top;
    uc->uc_mcontext.pc = (uintptr_t)fn;
    uc->uc_mcontext.regs[29] = 0;
    uc->uc_mcontext.regs[30] = 0;
#endif
}
#endif

static bool in_slot(const braid__stack_pool *p, int cls, void *slot, uintptr_t a)
{
    return slot && a >= (uintptr_t)slot && a < (uintptr_t)braid__stack_top(p, cls, slot);
}

/* Whether sp lies in one of t's stacks (guards included). */
static bool sp_in_task(braid__worker *w, braid__task *t, uintptr_t sp)
{
    braid__stack_pool *p = &w->rt->stacks;
    if (in_slot(p, t->stack_cls, t->slot, sp))
        return true;
    for (struct braid__extra_stack *e = t->extra_stacks; e; e = e->next)
        if (in_slot(p, p->default_cls, e->slot, sp))
            return true;
    return false;
}

static bool in_guard(void *slot, uintptr_t a)
{
    return slot && a >= (uintptr_t)slot && a < (uintptr_t)slot + BRAID_GUARD_SIZE;
}

static void chain(int sig, siginfo_t *si, void *uc)
{
    size_t k = 0;
    while (k < NFAULT && fault_signals[k] != sig)
        k++;
    struct sigaction *old = &old_action[k];
    if ((old->sa_flags & SA_SIGINFO) && old->sa_sigaction) {
        old->sa_sigaction(sig, si, uc);
        return;
    }
    if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
        return;
    }
    /* Default action: restore it; the faulting instruction runs again and
     * the kernel kills the process (with a core dump where enabled). */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    if (si->si_code <= 0)
        raise(sig);
}

static void fault_trampoline(void);

static void fault_handler(int sig, siginfo_t *si, void *ucv)
{
#ifdef UC_PC
    ucontext_t *uc = ucv;
    braid__worker *w = braid__tls_worker;
    braid__task *t = braid__tls_task;
    if (t && can_isolate && w->rescue && si->si_code > 0) {
        uintptr_t sp = UC_SP(uc), pc = UC_PC(uc), addr = (uintptr_t)si->si_addr;
        bool overflow = (sig == SIGSEGV || sig == SIGBUS) &&
                        (in_guard(t->slot, addr) || in_guard(t->slot, sp));
        for (struct braid__extra_stack *e = t->extra_stacks; e && !overflow; e = e->next)
            overflow = (sig == SIGSEGV || sig == SIGBUS) && in_guard(e->slot, addr);
        if (sp_in_task(w, t, sp) && !pc_excluded(pc) && (overflow || w->rt->cfg.isolate_faults)) {
            w->fault_sig = sig;
            w->fault_addr = addr;
            w->fault_pc = pc;
            w->fault_overflow = overflow;
            redirect(uc, (uintptr_t)w->rescue + w->rescue_size, fault_trampoline);
            return;
        }
    }
#endif
    chain(sig, si, ucv);
}

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGSEGV:
        return "SIGSEGV";
    case SIGBUS:
        return "SIGBUS";
    case SIGFPE:
        return "SIGFPE";
    case SIGILL:
        return "SIGILL";
    default:
        return "signal";
    }
}

static void continue_panic(void *p)
{
    braid__panic_unwind(p);
}

/* Runs on the worker's rescue stack in normal (non-handler) context. */
static void fault_trampoline(void)
{
    braid__worker *w = braid__tls_worker;
    braid__task *t = braid__tls_task;
    braid_runtime *rt = w->rt;
    const char *name = t->ext && t->ext->name[0] ? t->ext->name : NULL;
    braid__panic_info *info;
    if (w->fault_overflow) {
        info = braid__panic_info_fmt(NULL, 0, "stack overflow in task %llu%s%s%s",
                                     (unsigned long long)t->id, name ? " (" : "", name ? name : "",
                                     name ? ")" : "");
    } else {
        info = braid__panic_info_fmt(NULL, 0, "%s at address %p (pc %p) in task %llu",
                                     signal_name(w->fault_sig), (void *)w->fault_addr,
                                     (void *)w->fault_pc, (unsigned long long)t->id);
        if (!atomic_exchange_explicit(&rt->tainted, true, memory_order_relaxed)) {
            char msg[300];
            snprintf(msg, sizeof msg,
                     "braid: runtime tainted: %s in task %llu was turned into a panic "
                     "(isolate_faults)\n",
                     signal_name(w->fault_sig), (unsigned long long)t->id);
            braid__write_stderr(msg);
        }
    }
    if (!t->panic)
        t->panic = info;
    else
        braid__panic_info_free(info);
    /* Run the defers on a fresh stack: the faulting one may be exhausted,
     * and this rescue stack must be free for the worker's next fault. */
    struct braid__extra_stack *e = braid__malloc(sizeof *e);
    void *slot = e ? braid__stack_get(&rt->stacks, &w->stacks, rt->stacks.default_cls) : NULL;
    if (!slot) {
        free(e);
        t->defers = NULL; /* nowhere safe to run them */
        braid__write_stderr("braid: out of memory after a fault; defers skipped\n");
        braid__task_exit(t, BRAID_PANICKED, NULL);
    }
    e->slot = slot;
    e->next = t->extra_stacks;
    t->extra_stacks = e;
    braid__ctx cont, abandoned;
    char *lo = braid__stack_lo(&rt->stacks, rt->stacks.default_cls, slot);
    char *top = braid__stack_top(&rt->stacks, rt->stacks.default_cls, slot);
    braid__ctx_make(&cont, lo, (size_t)(top - lo), continue_panic, t);
    braid__ctx_switch(&abandoned, &cont);
    abort(); /* never resumed */
}

void braid__panic_release_extra(braid__worker *w, braid__task *t)
{
    struct braid__extra_stack *e = t->extra_stacks;
    braid__stack_pool *p = &w->rt->stacks;
    while (e) {
        struct braid__extra_stack *n = e->next;
        braid__stack_put(p, &w->stacks, p->default_cls, e->slot);
        free(e);
        e = n;
    }
    t->extra_stacks = NULL;
}

void braid__faults_acquire(void)
{
    pthread_mutex_lock(&fault_lock);
    if (fault_users++ == 0 && !braid__under_asan && !braid__under_tsan) {
        nranges = 0;
        found_libc = false;
        if (__start_braid_text && __stop_braid_text)
            add_range((uintptr_t)__start_braid_text, (uintptr_t)__stop_braid_text);
        dl_iterate_phdr(collect_object, NULL);
#ifdef UC_PC
        /* Without knowing where libbraid's and libc's code are (an LTO build
         * of libbraid, a static executable), a fault inside them could not
         * be told apart: then nothing is converted. */
        can_isolate = found_libc && ((__start_braid_text && __stop_braid_text) ||
                                     pc_excluded((uintptr_t)&braid__faults_acquire));
#endif
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = fault_handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        for (size_t k = 0; k < NFAULT; k++)
            installed[k] = sigaction(fault_signals[k], &sa, &old_action[k]) == 0;
    }
    pthread_mutex_unlock(&fault_lock);
}

void braid__faults_release(void)
{
    pthread_mutex_lock(&fault_lock);
    if (--fault_users == 0) {
        for (size_t k = 0; k < NFAULT; k++) {
            struct sigaction cur;
            /* Put back the old handler unless the program replaced ours. */
            if (installed[k] && sigaction(fault_signals[k], NULL, &cur) == 0 &&
                (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == fault_handler)
                sigaction(fault_signals[k], &old_action[k], NULL);
            installed[k] = false;
        }
        can_isolate = false;
    }
    pthread_mutex_unlock(&fault_lock);
}

int braid__panic_worker_init(braid__worker *w)
{
    long sz = sysconf(_SC_SIGSTKSZ);
    /* Room for the kernel's signal frame with AVX-512 state, and for the
     * handler itself. */
    w->altstack_size = (sz > 0 ? (size_t)sz : (size_t)SIGSTKSZ) + (size_t)32 * 1024;
    w->rescue_size = RESCUE_SIZE;
    w->altstack = braid__malloc(w->altstack_size);
    w->rescue = braid__malloc(w->rescue_size);
    if (!w->altstack || !w->rescue) {
        braid__panic_worker_destroy(w);
        return -ENOMEM;
    }
    return 0;
}

void braid__panic_worker_destroy(braid__worker *w)
{
    free(w->altstack);
    free(w->rescue);
    w->altstack = w->rescue = NULL;
}

void braid__panic_thread_enter(braid__worker *w)
{
    stack_t ss = { .ss_sp = w->altstack, .ss_size = w->altstack_size, .ss_flags = 0 };
    int saved = errno;
    w->altstack_installed = sigaltstack(&ss, &w->old_altstack) == 0;
    errno = saved;
}

void braid__panic_thread_leave(braid__worker *w)
{
    if (w->altstack_installed) {
        int saved = errno;
        /* An old stack that was disabled is restored as disabled. */
        sigaltstack(&w->old_altstack, NULL);
        errno = saved;
    }
    w->altstack_installed = false;
}
