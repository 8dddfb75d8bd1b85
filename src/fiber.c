#include "fiber.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#define BRAID_HAVE_VALGRIND 1
#endif
#endif

/* Weak references: non-NULL only when the program carries the sanitizer
 * runtime. */
extern void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size)
    __attribute__((weak));
extern void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                            size_t *size_old) __attribute__((weak));
extern void __asan_unpoison_memory_region(const volatile void *addr, size_t size)
    __attribute__((weak));
extern void *__tsan_get_current_fiber(void) __attribute__((weak));
extern void *__tsan_create_fiber(unsigned flags) __attribute__((weak));
extern void __tsan_destroy_fiber(void *fiber) __attribute__((weak));
extern void __tsan_switch_to_fiber(void *fiber, unsigned flags) __attribute__((weak));

bool braid__under_asan, braid__under_tsan, braid__under_valgrind, braid__under_tools;

void braid__fiber_detect(void)
{
    braid__under_asan = __sanitizer_start_switch_fiber && __sanitizer_finish_switch_fiber;
    braid__under_tsan = __tsan_switch_to_fiber && __tsan_create_fiber && __tsan_get_current_fiber;
#ifdef BRAID_HAVE_VALGRIND
    /* BRAID_VALGRIND=0 skips the annotations, to profile braid's own
     * instruction counts under callgrind. */
    const char *v = getenv("BRAID_VALGRIND");
    braid__under_valgrind = RUNNING_ON_VALGRIND != 0 && !(v && v[0] == '0');
#endif
    braid__under_tools = braid__under_asan || braid__under_tsan || braid__under_valgrind;
}

void braid__fiber_init_thread(braid__fiber *f)
{
    pthread_attr_t attr;
    void *addr = NULL;
    size_t size = 0;
    int saved = errno;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstack(&attr, &addr, &size);
        pthread_attr_destroy(&attr);
    }
    errno = saved;
    f->stack_lo = addr;
    f->stack_size = size;
    f->asan_fake = NULL;
    f->tsan = braid__under_tsan ? __tsan_get_current_fiber() : NULL;
    f->vg_id = 0;
}

void braid__fiber_make_tools(braid__fiber *f)
{
    f->asan_fake = NULL;
    f->tsan = NULL;
    f->vg_id = 0;
    /* A recycled stack may still carry the redzone poison of frames that
     * never returned (a task that panicked deep in a call chain). */
    if (braid__under_asan && __asan_unpoison_memory_region)
        __asan_unpoison_memory_region(f->stack_lo, f->stack_size);
    if (braid__under_tsan)
        f->tsan = __tsan_create_fiber(0);
#ifdef BRAID_HAVE_VALGRIND
    if (braid__under_valgrind)
        f->vg_id = VALGRIND_STACK_REGISTER(f->stack_lo, (const char *)f->stack_lo + f->stack_size);
#endif
}

void braid__fiber_reuse_tools(char *top)
{
    size_t n = braid__page_size();
    if (braid__under_asan && __asan_unpoison_memory_region)
        __asan_unpoison_memory_region(top - n, n);
#ifdef BRAID_HAVE_VALGRIND
    if (braid__under_valgrind)
        VALGRIND_MAKE_MEM_UNDEFINED(top - n, n);
#endif
}

void braid__fiber_release_tools(braid__fiber *f)
{
    if (f->tsan)
        __tsan_destroy_fiber(f->tsan);
    f->tsan = NULL;
#ifdef BRAID_HAVE_VALGRIND
    if (f->vg_id)
        VALGRIND_STACK_DEREGISTER(f->vg_id);
    f->vg_id = 0;
#endif
}

void braid__fiber_switch_tools(braid__fiber *from, braid__fiber *to)
{
    if (braid__under_asan)
        __sanitizer_start_switch_fiber(&from->asan_fake, to->stack_lo, to->stack_size);
    if (braid__under_tsan)
        __tsan_switch_to_fiber(to->tsan, 0);
    braid__ctx_switch(&from->ctx, &to->ctx);
    if (braid__under_asan)
        __sanitizer_finish_switch_fiber(from->asan_fake, NULL, NULL);
}

void braid__fiber_exit_tools(braid__fiber *from, braid__fiber *to)
{
    if (braid__under_asan)
        __sanitizer_start_switch_fiber(NULL, to->stack_lo, to->stack_size);
    if (braid__under_tsan)
        __tsan_switch_to_fiber(to->tsan, 0);
    braid__ctx_switch(&from->ctx, &to->ctx);
    abort(); /* nothing switches back to a dead fiber */
}

void braid__fiber_entered_tools(void)
{
    if (braid__under_asan)
        __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
}
