/*
 * worker.h: one event loop on its own thread.
 *
 * A worker has its own loop (loop.h: event_base, curl multi, client
 * connections, graveyard) and its own SO_REUSEPORT listeners: nothing is
 * shared on the hot path but atomics for metrics and the read-only,
 * reference-counted configuration. The main thread (server.c) talks to a
 * worker only by running a function on the worker's loop (worker_call);
 * what the worker needs to know of all the workers together it asks
 * through the hooks the server hands it.
 *
 * The worker's event_base has no lock (EVENT_BASE_FLAG_NOLOCK): only the
 * worker's own thread touches it. Other threads post jobs to a queue of
 * the worker's own, a FIFO under a mutex, and wake the loop through an
 * eventfd the loop watches; the loop runs the jobs in the order posted.
 */
#ifndef FANOUTD_WORKER_H
#define FANOUTD_WORKER_H

#include <pthread.h>
#include <stdint.h>

#include "loop.h"

struct config;
struct event;
struct health_checks;
struct listener;
struct worker;
struct worker_job;

struct worker_hooks {
	/* Client connections of every worker: count one in, one out, and
	 * whether one more fits (max_connections). Any thread. */
	void	(*conn_opened)(void);
	void	(*conn_closed)(void);
	int	(*conns_full)(void);
	/* This worker paused accepting at max_connections: the others
	 * should too. Its own thread. */
	void	(*paused)(struct worker *);
	/* This worker has drained: no connection left. Its own thread. */
	void	(*idle)(struct worker *);
};

struct worker {
	unsigned			 id;
	pthread_t			 thread;
	struct loop			 loop;
	struct listener			*listener;
	const struct worker_hooks	*hooks;
	unsigned			 nworkers;	/* of the process */
	struct health_checks		*checks;	/* the ones it runs */
	struct event			*heartbeat;	/* proves the loop turns */
	uint64_t			 beat_ms;	/* atomic: last heartbeat */
	int				 stopping;	/* 1 asked, -1 idle told */
	/*
	 * Jobs posted by any thread (worker_call), oldest first, until the
	 * loop takes them all; posting writes jobs_fd, an eventfd that
	 * jobs_ev watches. jobs_tail is NULL until the lock is set up.
	 */
	pthread_mutex_t			 jobs_lock;
	struct worker_job		*jobs;
	struct worker_job		**jobs_tail;
	int				 jobs_fd;
	struct event			*jobs_ev;
};

/*
 * An event loop with its curl multi (keeping up to pool idle upstream
 * connections), no listeners and no thread yet. announced: the process's
 * drain flag, read atomically.
 */
struct worker	*worker_new(unsigned id, struct config *, unsigned long pool,
		    const struct worker_hooks *, const int *announced);
/* Bind the client listeners of conf: 0, or -1 with the reason logged. */
int		 worker_listen(struct worker *, const struct config *);
void		 worker_free(struct worker *);
/* Run the loop on a thread of its own; end it (after the jobs posted
 * before) and wait for the thread. */
int		 worker_start(struct worker *);
void		 worker_join(struct worker *);
/* Run fn(w, arg) on w's loop, after the jobs posted before it; wait for it
 * when sync. Any thread but w's own (sync), any time after worker_new: a
 * job posted before worker_start runs once the loop does. */
void		 worker_call(struct worker *, void (*)(struct worker *, void *),
		    void *, int sync);
/* When w's loop last turned (CLOCK_MONOTONIC ms; any thread). */
uint64_t	 worker_beat(const struct worker *);

/* Jobs for worker_call. */
/* SIGTERM: close the listeners and idle connections, finish the rest. */
void		 worker_drain(struct worker *, void *);
/* Drain over: cancel what is in flight (shutdown), close what is left. */
void		 worker_stop(struct worker *, void *);
/* Another worker reached max_connections: stop accepting while full. */
void		 worker_pause(struct worker *, void *);
/* Take a new configuration (arg); new connections and requests take it. */
void		 worker_set_conf(struct worker *, void *);

#endif
