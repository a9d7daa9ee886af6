/*
 * worker.c: one event loop on its own thread.
 *
 * Cross-thread calls go through event_base_once() on the worker's base,
 * which libevent makes safe (and wakes the loop) once evthread is set up
 * with pthreads; the caller may wait for the function to have run.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config.h"
#include "listener.h"
#include "log.h"
#include "server.h"
#include "upstream.h"
#include "util.h"

struct worker_job {
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

static void
worker_reaper_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker	*w = arg;
	struct grave	*g;

	while ((g = SLIST_FIRST(&w->graveyard)) != NULL) {
		SLIST_REMOVE_HEAD(&w->graveyard, entry);
		g->fn(g->ptr);	/* frees g too: it is part of the object */
	}
}

void
worker_defer_free(struct worker *w, struct grave *g, void (*fn)(void *),
    void *ptr)
{
	g->fn = fn;
	g->ptr = ptr;
	SLIST_INSERT_HEAD(&w->graveyard, g, entry);
	event_active(w->reaper, EV_TIMEOUT, 0);
}

struct worker *
worker_new(unsigned id, struct config *conf, unsigned long pool)
{
	struct worker		*w;
	struct event_config	*cfg;

	if ((w = calloc(1, sizeof *w)) == NULL)
		return (NULL);
	w->id = id;
	TAILQ_INIT(&w->conns);
	SLIST_INIT(&w->graveyard);
	w->conf = config_ref(conf);
	/*
	 * With the changelist, an fd whose events are deleted and added
	 * again within one pass of the loop (curl re-arming a socket, a
	 * bufferevent flushing what it was just given) costs no epoll_ctl.
	 */
	if ((cfg = event_config_new()) == NULL)
		goto fail;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	/*
	 * Timers on CLOCK_MONOTONIC, not libevent's default of the coarse
	 * clock (a tick of 4 ms on a HZ=250 kernel): a deadline, a hedge_delay
	 * or a drain_timeout never fires before it is due.
	 */
	event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	w->base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	if (w->base == NULL)
		goto fail;
	if ((w->reaper = event_new(w->base, -1, 0, worker_reaper_cb, w)) == NULL)
		goto fail;
	if ((w->upstreams = upstreams_new(w->base, pool)) == NULL)
		goto fail;
	w->beat_ms = now_ms();
	if ((w->heartbeat = event_new(w->base, -1, EV_PERSIST,
	    worker_heartbeat_cb, w)) == NULL ||
	    event_add(w->heartbeat, &(struct timeval){ 0, HEARTBEAT_MS * 1000 }))
		goto fail;
	return (w);
fail:
	log_error("cannot set up an event loop worker=%u", id);
	worker_free(w);
	return (NULL);
}

void
worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	listener_free(w->listener);
	if (w->heartbeat != NULL)
		event_free(w->heartbeat);
	if (w->upstreams != NULL)
		upstreams_free(w->upstreams);
	if (w->reaper != NULL) {
		worker_reaper_cb(-1, 0, w);
		event_free(w->reaper);
	}
	if (w->base != NULL)
		event_base_free(w->base);
	config_unref(w->conf);
	free(w);
}

void
worker_set_conf(struct worker *w, struct config *conf)
{
	struct config	*old = w->conf;

	w->conf = config_ref(conf);
	config_unref(old);
}

static void
worker_job_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker_job	*job = arg;

	job->fn(job->w, job->arg);
	if (!job->sync) {
		free(job);
		return;
	}
	pthread_mutex_lock(&job->lock);
	job->done = 1;
	pthread_cond_signal(&job->cond);
	pthread_mutex_unlock(&job->lock);
}

void
worker_call(struct worker *w, void (*fn)(struct worker *, void *), void *arg,
    int sync)
{
	struct worker_job	 local, *job;
	struct timeval		 now = { 0, 0 };

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
	if (event_base_once(w->base, -1, EV_TIMEOUT, worker_job_cb, job,
	    &now) == -1)
		fatalx("worker_call: event_base_once failed");
	if (!sync)
		return;
	pthread_mutex_lock(&job->lock);
	while (!job->done)
		pthread_cond_wait(&job->cond, &job->lock);
	pthread_mutex_unlock(&job->lock);
	pthread_mutex_destroy(&job->lock);
	pthread_cond_destroy(&job->cond);
}
