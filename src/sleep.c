/*
 * Time: yielding and sleeping.  A sleeping task's timer entry is part of its
 * own task record and sits in its home worker's wheel (timer.h).
 */
#include "det.h"
#include "sched.h"
#include "util.h"

uint64_t braid_now_ns(void)
{
    return braid__clock_now();
}

int braid_yield(void)
{
    braid__task *t = braid__task_current();
    if (!t)
        return -EPERM;
    if (braid__task_should_cancel(t))
        return -ECANCELED;
    braid__task_yield_now(t);
    return 0;
}

int braid_sleep_until(uint64_t deadline_ns)
{
    braid__task *t = braid__task_current();
    if (!t)
        return -EPERM;
    if (braid__task_should_cancel(t))
        return -ECANCELED;
    if (!braid__task_timer_arm(t, deadline_ns))
        return braid_yield(); /* already due: still let others run */
    t->wait_reason = BRAID_WAIT_SLEEP;
    int rc = 0;
    while (!t->timer_fired) {
        if (braid__task_park(t, true) < 0) {
            rc = -ECANCELED;
            break;
        }
    }
    braid__task_timer_done(t);
    t->wait_reason = BRAID_WAIT_NONE;
    return rc;
}

uint64_t braid_deadline_ms(uint64_t ms)
{
    uint64_t now = braid__clock_now();
    return ms > (BRAID_FOREVER - now) / 1000000u ? BRAID_FOREVER : now + ms * 1000000u;
}

int braid_sleep_ms(uint64_t ms)
{
    if (!braid__task_current())
        return -EPERM;
    return braid_sleep_until(braid_deadline_ms(ms));
}
