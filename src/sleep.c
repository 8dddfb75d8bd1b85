/*
 * Time: yielding and sleeping.  A sleeping task's timer entry is part of its
 * own task record and sits in its home worker's wheel (timer.h).
 */
#include "sched.h"
#include "util.h"

uint64_t braid_now_ns(void)
{
    return braid__now_ns();
}

int braid_yield(void)
{
    braid__task *t = braid__task_current();
    if (!t)
        return -EPERM;
    if (braid__task_should_cancel(t))
        return -ECANCELED;
    t->wait_reason = BRAID_WAIT_YIELD;
    braid__sched_yield_enqueue(t->home, t);
    int saved = errno;
    braid__sched_suspend(t);
    errno = saved;
    t->wait_reason = BRAID_WAIT_NONE;
    return 0;
}

int braid_sleep_until(uint64_t deadline_ns)
{
    braid__task *t = braid__task_current();
    if (!t)
        return -EPERM;
    if (braid__task_should_cancel(t))
        return -ECANCELED;
    braid__wheel *wheel = &t->home->wheel;
    t->timer_fired = false;
    if (!braid__timer_arm(wheel, &t->timer, deadline_ns))
        return braid_yield(); /* already due: still let others run */
    t->wait_reason = BRAID_WAIT_SLEEP;
    int rc = 0;
    while (!t->timer_fired) {
        if (braid__task_park(t, true) < 0) {
            braid__timer_disarm(wheel, &t->timer);
            rc = -ECANCELED;
            break;
        }
    }
    t->wait_reason = BRAID_WAIT_NONE;
    return rc;
}

int braid_sleep_ms(uint64_t ms)
{
    if (!braid__task_current())
        return -EPERM;
    uint64_t now = braid__now_ns();
    uint64_t span = ms > (UINT64_MAX - now) / 1000000u ? UINT64_MAX - now : ms * 1000000u;
    return braid_sleep_until(now + span);
}
