/*
 * server.h: the process and its event-loop workers.
 *
 * The main thread owns signals, the admin listener, reloads and the
 * drain; it runs no client traffic. Each worker is a thread with its own
 * event_base, curl multi, SO_REUSEPORT listeners and client connections:
 * nothing is shared on the hot path but atomics for metrics and the
 * read-only, reference-counted configuration. The main thread talks to a
 * worker only by running a function on the worker's loop (worker_call).
 */
#ifndef FANOUTD_SERVER_H
#define FANOUTD_SERVER_H

#include <pthread.h>
#include <stdint.h>
#include <sys/queue.h>

struct event;
struct event_base;
struct config;
struct conn;
struct listener;
struct admin;
struct upstreams;

/*
 * Objects that a callback further up the stack may still hold are not
 * freed on the spot: they are handed to the worker's graveyard, which
 * frees them once the current event callback has returned (PgBouncer's
 * just-freed lists, tmux's deferred unref).
 */
struct grave {
	SLIST_ENTRY(grave)	 entry;
	void			(*fn)(void *);
	void			*ptr;
};

TAILQ_HEAD(conn_list, conn);

struct worker {
	unsigned		 id;
	pthread_t		 thread;
	struct event_base	*base;
	struct upstreams	*upstreams;
	struct config		*conf;		/* this worker's reference */
	struct conn_list	 conns;
	unsigned		 nconns;
	struct listener		*listener;
	struct event		*reaper;
	struct event		*heartbeat;	/* proves the loop turns */
	uint64_t		 beat_ms;	/* atomic: last heartbeat */
	SLIST_HEAD(, grave)	 graveyard;
	int			 draining;	/* all of these: worker thread */
	int			 stopping;
};

struct server {
	struct config		*conf;
	struct event_base	*base;		/* the main thread's */
	struct worker		**workers;
	unsigned		 nworkers;
	struct admin		*admin;
	struct event		*sig_term;
	struct event		*sig_int;
	struct event		*sig_hup;
	struct event		*sig_usr1;
	struct event		*drain_timer;
	struct event		*idle_check;	/* workers poke it when idle */
	int			 draining;	/* SIGTERM seen (atomic) */
	int			 stopping;	/* drain over (main thread) */
	unsigned		 idle_workers;	/* atomic */
	unsigned		 nconns;	/* all workers' (atomic) */
	unsigned		 max_conns;	/* in effect (atomic) */
	unsigned long		 nofile;	/* the descriptor limit */
};

extern struct server	*server;

/* 0 / -1 with the reason logged; the caller exits 2 on -1. */
int	server_start(struct config *, unsigned long nofile);
/* Runs until the drain is over. */
void	server_run(void);
void	server_free(void);
int	server_draining(void);
/* Client connections: count them, and say whether one more fits. */
void	server_conn_opened(void);
void	server_conn_closed(void);
int	server_conns_full(void);
/* max_connections reached on worker w: pause the other workers too. */
void	server_pause_accepting(struct worker *);

/* An event loop with its curl multi, no listeners and no thread yet. */
struct worker	*worker_new(unsigned, struct config *, unsigned long pool);
void		 worker_free(struct worker *);
/* Run fn(w, arg) on w's loop; wait for it when sync. */
void		 worker_call(struct worker *, void (*)(struct worker *, void *),
		    void *, int sync);
/* 1 when every worker's loop turned within max_ms (the watchdog asks). */
int		 server_workers_alive(uint64_t max_ms);
/* Free fn(ptr) after the current callback, on w's loop. g is a struct
 * grave inside the object itself: deferring a free allocates nothing and
 * cannot fail. Once per object. */
void		 worker_defer_free(struct worker *, struct grave *g,
		    void (*fn)(void *), void *ptr);
/* A client connection has gone: resume accepting, maybe end a drain. */
void		 worker_conn_gone(struct worker *);
/* Take a new configuration (worker thread). */
void		 worker_set_conf(struct worker *, struct config *);

#endif
