/*
 * worker.c: one event loop on its own thread (see worker.h).
 *
 * The worker's base is made without a lock: evthread is set up with
 * pthreads for the main thread's base, and a locked worker base would take
 * and release its mutex a score of times for every request though no other
 * thread ever touches it. Cross-thread calls go instead through the
 * worker's own job queue: worker_call() appends a job under jobs_lock and
 * writes the eventfd; the loop's jobs_ev reads it, takes the whole list and
 * runs the jobs, in the order posted, outside the lock. The caller may wait
 * for its job to have run (a mutex and condition of the job's own).
 */
#include <sys/eventfd.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "config.h"
#include "conn.h"
#include "health.h"
#include "listener.h"
#include "log.h"
#include "upstream.h"
#include "util.h"
#include "worker.h"

struct worker_job {
	struct worker_job *next;	/* in w->jobs */
	struct worker	*w;
	void		(*fn)(struct worker *, void *);
	void		*arg;
	int		 sync;
	int		 done;
	pthread_mutex_t	 lock;
	pthread_cond_t	 cond;
};

/* How often a worker shows its loop turns. */
#define HEARTBEAT_MS	100

static void
worker_heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker	*w = arg;

	__atomic_store_n(&w->beat_ms, now_ms(), __ATOMIC_RELAXED);
}

uint64_t
worker_beat(const struct worker *w)
{
	return (__atomic_load_n(&w->beat_ms, __ATOMIC_RELAXED));
}

/* Drained and not yet said so: tell the server, once. */
static void
worker_check_idle(struct worker *w)
{
	if (!w->loop.draining || w->loop.nconns > 0 || w->stopping < 0)
		return;
	w->stopping = -1;
	w->hooks->idle(w);
}

static void
worker_conn_opened(void *arg)
{
	struct worker	*w = arg;

	w->hooks->conn_opened();
}

/* A client connection has gone: resume accepting, maybe end a drain. */
static void
worker_conn_gone(void *arg)
{
	struct worker	*w = arg;

	w->hooks->conn_closed();
	/* Other workers' paused listeners find out from their own timers. */
	if (w->listener != NULL && listener_paused(w->listener) &&
	    !w->hooks->conns_full())
		listener_resume(w->listener);
	worker_check_idle(w);
}

/* The listener's questions, answered for all the workers together. */
static int
worker_listener_full(void *arg)
{
	struct worker	*w = arg;

	return (w->hooks->conns_full());
}

static void
worker_listener_paused(void *arg)
{
	struct worker	*w = arg;

	w->hooks->paused(w);
}

static const struct listener_hooks worker_listener_hooks = {
	worker_listener_full,
	worker_listener_paused,
};

static void	worker_jobs_cb(evutil_socket_t, short, void *);

struct worker *
worker_new(unsigned id, struct config *conf, unsigned long pool,
    const struct worker_hooks *hooks, const int *announced)
{
	struct worker		*w;
	struct event_config	*cfg;
	struct event_base	*base;

	if ((w = calloc(1, sizeof *w)) == NULL)
		return (NULL);
	w->id = id;
	w->hooks = hooks;
	w->jobs_fd = -1;
	/*
	 * No lock: only this worker's thread touches the base (other threads
	 * post jobs, see worker_call), and a lock costs some twenty mutex
	 * pairs per request.
	 * With the changelist, an fd whose events are deleted and added
	 * again within one pass of the loop (curl re-arming a socket, a
	 * bufferevent flushing what it was just given) costs no epoll_ctl.
	 * Timers on CLOCK_MONOTONIC, not libevent's default of the coarse
	 * clock (a tick of 4 ms on a HZ=250 kernel): a deadline, a hedge_delay
	 * or a drain_timeout never fires before it is due.
	 */
	if ((cfg = event_config_new()) == NULL) {
		free(w);
		return (NULL);
	}
	event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	if (base == NULL) {
		free(w);
		return (NULL);
	}
	if (loop_init(&w->loop, base) == -1) {
		event_base_free(base);
		free(w);
		return (NULL);
	}
	w->loop.conf = config_ref(conf);
	w->loop.announced = announced;
	w->loop.conn_opened = worker_conn_opened;
	w->loop.conn_gone = worker_conn_gone;
	w->loop.owner = w;
	if ((w->loop.upstreams = upstreams_new(base, pool)) == NULL)
		goto fail;
	w->nworkers = conf->workers ? conf->workers : 1;
	w->checks = health_checks_new(base, w->loop.upstreams, conf, id,
	    w->nworkers);
	w->beat_ms = now_ms();
	if ((w->heartbeat = event_new(base, -1, EV_PERSIST,
	    worker_heartbeat_cb, w)) == NULL ||
	    event_add(w->heartbeat, &(struct timeval){ 0, HEARTBEAT_MS * 1000 }))
		goto fail;
	/*
	 * Watched from now on: a job posted before the thread starts (one
	 * worker pausing the others while they start) leaves the eventfd
	 * readable, and the loop's first pass runs it.
	 */
	if (pthread_mutex_init(&w->jobs_lock, NULL) != 0)
		goto fail;
	w->jobs_tail = &w->jobs;
	if ((w->jobs_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1 ||
	    (w->jobs_ev = event_new(base, w->jobs_fd, EV_READ | EV_PERSIST,
	    worker_jobs_cb, w)) == NULL ||
	    event_add(w->jobs_ev, NULL) == -1)
		goto fail;
	return (w);
fail:
	log_error("cannot set up an event loop worker=%u", id);
	worker_free(w);
	return (NULL);
}

int
worker_listen(struct worker *w, const struct config *conf)
{
	w->listener = listener_new(&w->loop, w->id, conf,
	    &worker_listener_hooks, w);
	return (w->listener == NULL ? -1 : 0);
}

void
worker_free(struct worker *w)
{
	struct worker_job	*job;

	if (w == NULL)
		return;
	listener_free(w->listener);
	health_checks_free(w->checks);
	if (w->heartbeat != NULL)
		event_free(w->heartbeat);
	if (w->jobs_ev != NULL)
		event_free(w->jobs_ev);
	if (w->jobs_fd != -1)
		close(w->jobs_fd);
	/*
	 * Jobs posted after the loop's last pass (a pause from a worker still
	 * running) never run. Only async ones can be left, on the heap: the
	 * poster of a sync one would still be waiting for it.
	 */
	if (w->jobs_tail != NULL) {
		while ((job = w->jobs) != NULL) {
			w->jobs = job->next;
			free(job);
		}
		pthread_mutex_destroy(&w->jobs_lock);
	}
	if (w->loop.upstreams != NULL)
		upstreams_free(w->loop.upstreams);
	loop_clear(&w->loop);
	if (w->loop.base != NULL)
		event_base_free(w->loop.base);
	config_unref(w->loop.conf);
	free(w);
}

static void *
worker_main(void *arg)
{
	struct worker	*w = arg;
	int		 i;

	log_debug("worker started worker=%u", w->id);
	event_base_loop(w->loop.base, EVLOOP_NO_EXIT_ON_EMPTY);
	/*
	 * A TLS connection's bufferevent, freed in the last pass, goes in
	 * deferred callbacks of its own: let them run, or it is never freed.
	 */
	for (i = 0; i < 4; i++)
		event_base_loop(w->loop.base, EVLOOP_NONBLOCK);
	log_debug("worker stopped worker=%u", w->id);
	return (NULL);
}

int
worker_start(struct worker *w)
{
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
		log_error("cannot start worker thread worker=%u", w->id);
		return (-1);
	}
	return (0);
}

/* The last job: the base has no lock, so it is broken on its own thread. */
static void
worker_break(struct worker *w, void *arg)
{
	event_base_loopbreak(w->loop.base);
}

void
worker_join(struct worker *w)
{
	worker_call(w, worker_break, NULL, 0);
	pthread_join(w->thread, NULL);
}

/* ---- jobs, on the worker's thread --------------------------------------- */

void
worker_set_conf(struct worker *w, void *arg)
{
	struct config	*old = w->loop.conf;

	w->loop.conf = config_ref(arg);
	config_unref(old);
	/* The checks of the new configuration; the states they feed are
	 * the same for every server it keeps. */
	health_checks_free(w->checks);
	w->checks = NULL;
	if (!w->loop.draining)
		w->checks = health_checks_new(w->loop.base, w->loop.upstreams,
		    w->loop.conf, w->id, w->nworkers);
}

void
worker_pause(struct worker *w, void *arg)
{
	if (w->listener != NULL && !listener_paused(w->listener) &&
	    w->hooks->conns_full())
		listener_pause(w->listener);
}

void
worker_drain(struct worker *w, void *arg)
{
	w->loop.draining = 1;
	health_checks_free(w->checks);
	w->checks = NULL;
	listener_free(w->listener);
	w->listener = NULL;
	conn_drain_all(&w->loop);
	worker_check_idle(w);
}

void
worker_stop(struct worker *w, void *arg)
{
	if (w->stopping == 0)
		w->stopping = 1;
	/* Answers 503 to what is in flight, closes everything else. */
	conn_stop_all(&w->loop);
	worker_check_idle(w);
}

static void
worker_job_run(struct worker_job *job)
{
	job->fn(job->w, job->arg);
	if (!job->sync) {
		free(job);
		return;
	}
	/* The poster frees job once it sees done: not touched after. */
	pthread_mutex_lock(&job->lock);
	job->done = 1;
	pthread_cond_signal(&job->cond);
	pthread_mutex_unlock(&job->lock);
}

/*
 * The eventfd is read before the list is taken: a job posted after that
 * writes it again and gets a pass of its own, never lost (at worst a pass
 * finds the list empty).
 */
static void
worker_jobs_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker		*w = arg;
	struct worker_job	*job, *next;
	uint64_t		 n;

	while (read(fd, &n, sizeof n) == -1 && errno == EINTR)
		;
	pthread_mutex_lock(&w->jobs_lock);
	job = w->jobs;
	w->jobs = NULL;
	w->jobs_tail = &w->jobs;
	pthread_mutex_unlock(&w->jobs_lock);
	/* Outside the lock: posters need not wait while a job runs, and a
	 * job may post another. */
	for (; job != NULL; job = next) {
		next = job->next;
		worker_job_run(job);
	}
}

void
worker_call(struct worker *w, void (*fn)(struct worker *, void *), void *arg,
    int sync)
{
	struct worker_job	 local, *job;
	uint64_t		 one = 1;

	if (sync) {
		job = &local;
		memset(job, 0, sizeof *job);
		pthread_mutex_init(&job->lock, NULL);
		pthread_cond_init(&job->cond, NULL);
	} else if ((job = calloc(1, sizeof *job)) == NULL)
		fatal("worker_call");
	job->w = w;
	job->fn = fn;
	job->arg = arg;
	job->sync = sync;
	pthread_mutex_lock(&w->jobs_lock);
	*w->jobs_tail = job;
	w->jobs_tail = &job->next;
	pthread_mutex_unlock(&w->jobs_lock);
	/* EAGAIN: the counter is full, so the loop has been woken already. */
	while (write(w->jobs_fd, &one, sizeof one) == -1) {
		if (errno == EAGAIN)
			break;
		if (errno != EINTR)
			fatal("worker_call: eventfd");
	}
	if (!sync)
		return;
	pthread_mutex_lock(&job->lock);
	while (!job->done)
		pthread_cond_wait(&job->cond, &job->lock);
	pthread_mutex_unlock(&job->lock);
	pthread_mutex_destroy(&job->lock);
	pthread_cond_destroy(&job->cond);
}
