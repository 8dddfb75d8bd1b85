/*
 * The list of live runtimes, for debuggers (debug.h).  gdb/braid.py relies
 * on these names and on the fields it reads: braid_runtime's reg_next,
 * nworkers and workers, braid__worker's index and live list, and
 * braid__task's fields (task.h); change them together.
 */
#include "debug.h"
#include "sched.h"

#include <pthread.h>

__attribute__((used)) braid_runtime *braid__runtimes;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;

void braid__debug_register(braid_runtime *rt)
{
    pthread_mutex_lock(&registry_lock);
    rt->reg_prev = NULL;
    rt->reg_next = braid__runtimes;
    if (braid__runtimes)
        braid__runtimes->reg_prev = rt;
    braid__runtimes = rt;
    pthread_mutex_unlock(&registry_lock);
}

void braid__debug_unregister(braid_runtime *rt)
{
    pthread_mutex_lock(&registry_lock);
    if (rt->reg_prev)
        rt->reg_prev->reg_next = rt->reg_next;
    else if (braid__runtimes == rt)
        braid__runtimes = rt->reg_next;
    if (rt->reg_next)
        rt->reg_next->reg_prev = rt->reg_prev;
    rt->reg_prev = rt->reg_next = NULL;
    pthread_mutex_unlock(&registry_lock);
}
