/* The host's thread pool.  Workers take tasks from a shared counter, so which
 * thread runs a task varies from run to run; callers make results independent
 * of that by giving each task its own output (see fm_parallel_for).
 *
 * A training step posts a hundred or so jobs, many of them well under a
 * millisecond, with little serial work between them.  Waking a sleeping
 * thread through the kernel takes tens of microseconds, so both sides first
 * spin a short while (POOL_SPIN) on the job counter and the finish count,
 * and sleep on the condition variables only when nothing comes. */
#include "fm/fm_base.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

/* OpenBLAS (pthread build) starts its own pool when it loads.  We want every
 * thread in the process to be ours: one BLAS thread per call, and its pool
 * shut down.  Both functions are exported by libopenblas. */
extern void openblas_set_num_threads(int n);
extern void blas_thread_shutdown_(void);

static struct {
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    pthread_t *workers;
    int nworkers;       /* running worker threads: threads - 1, or 0 before the first job */
    int threads;        /* the setting: callers + workers */
    /* Written under mu; also read without it while spinning. */
    _Atomic uint64_t generation;
    uint64_t started_at; /* generation when the workers were started */
    bool shutdown;
    fm_task_fn fn;
    void *arg;
    int ntasks;
    atomic_int next;
    atomic_int finished; /* workers done with the current generation (written under mu) */
} pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .work_cv = PTHREAD_COND_INITIALIZER,
    .done_cv = PTHREAD_COND_INITIALIZER,
};

/* Pause instructions to spin before sleeping: tens of microseconds, up to a
 * hundred or two on processors with a slow pause. */
#define POOL_SPIN 4000

static inline void pool_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
}

static _Thread_local bool in_task;
static _Thread_local int this_thread;  /* index of the running thread while in_task */

static void run_tasks(int thread)
{
    in_task = true;
    this_thread = thread;
    for (int t; (t = atomic_fetch_add(&pool.next, 1)) < pool.ntasks;)
        pool.fn(pool.arg, t, thread);
    in_task = false;
}

static void *worker_main(void *arg)
{
    int thread = (int)(intptr_t)arg;
    pthread_mutex_lock(&pool.mu);
    /* Not pool.generation: the first job may already have been posted before
     * this thread got the lock, and waiting for the next one would hang. */
    uint64_t seen = pool.started_at;
    for (;;) {
        pthread_mutex_unlock(&pool.mu);
        for (int i = 0; i < POOL_SPIN && atomic_load(&pool.generation) == seen; i++)
            pool_pause();
        pthread_mutex_lock(&pool.mu);
        while (!pool.shutdown && pool.generation == seen)
            pthread_cond_wait(&pool.work_cv, &pool.mu);
        if (pool.shutdown) break;
        seen = pool.generation;
        pthread_mutex_unlock(&pool.mu);
        run_tasks(thread);
        pthread_mutex_lock(&pool.mu);
        if (++pool.finished == pool.nworkers) pthread_cond_signal(&pool.done_cv);
    }
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

static void pool_stop(void)
{
    pthread_mutex_lock(&pool.mu);
    pool.shutdown = true;
    pthread_cond_broadcast(&pool.work_cv);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 0; i < pool.nworkers; i++)
        pthread_join(pool.workers[i], NULL);
    free(pool.workers);
    pool.workers = NULL;
    pool.nworkers = 0;
    pool.shutdown = false;
}

static void pool_start(void)
{
    pool.nworkers = pool.threads - 1;
    pool.started_at = pool.generation;
    pool.workers = fm_xcalloc((size_t)pool.nworkers, sizeof *pool.workers);
    for (int i = 0; i < pool.nworkers; i++) {
        int rc = pthread_create(&pool.workers[i], NULL, worker_main, (void *)(intptr_t)(i + 1));
        FM_ASSERT(rc == 0);
    }
}

static int online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

__attribute__((constructor)) static void threads_init(void)
{
    openblas_set_num_threads(1);
    blas_thread_shutdown_();
    pool.threads = online_cores();
}

__attribute__((destructor)) static void threads_fini(void)
{
    if (pool.nworkers > 0) pool_stop();
}

void fm_set_threads(int n)
{
    FM_ASSERT(!in_task);
    if (n <= 0) n = online_cores();
    if (n > 256) n = 256;
    if (pool.nworkers > 0) pool_stop();
    pool.threads = n;
}

int fm_get_threads(void) { return pool.threads; }

void fm_parallel_for(int ntasks, fm_task_fn fn, void *arg)
{
    if (ntasks <= 0) return;
    if (in_task || pool.threads == 1 || ntasks == 1) {
        /* Serially on this thread; a nested call keeps its thread index so
         * per-thread scratch stays unique. */
        bool nested = in_task;
        int thread = nested ? this_thread : 0;
        in_task = true;
        this_thread = thread;
        for (int t = 0; t < ntasks; t++) fn(arg, t, thread);
        in_task = nested;
        return;
    }
    if (pool.nworkers == 0) pool_start();
    pthread_mutex_lock(&pool.mu);
    pool.fn = fn;
    pool.arg = arg;
    pool.ntasks = ntasks;
    atomic_store(&pool.next, 0);
    pool.finished = 0;
    pool.generation++;
    pthread_cond_broadcast(&pool.work_cv);
    pthread_mutex_unlock(&pool.mu);

    run_tasks(0);

    for (int i = 0; i < POOL_SPIN && atomic_load(&pool.finished) < pool.nworkers; i++)
        pool_pause();
    pthread_mutex_lock(&pool.mu);
    while (pool.finished < pool.nworkers)
        pthread_cond_wait(&pool.done_cv, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
}
