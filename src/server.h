/*
 * server.h: the process (configuration, drain, signals) and its event-loop
 * worker (event_base, curl multi, client connections).
 */
#ifndef FANOUTD_SERVER_H
#define FANOUTD_SERVER_H

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
 * freed on the spot: they are marked dead and handed to the worker's
 * graveyard, which frees them once the current event callback has returned
 * (PgBouncer's just-freed lists, tmux's deferred unref).
 */
struct grave {
	SLIST_ENTRY(grave)	 entry;
	void			(*fn)(void *);
	void			*ptr;
};

TAILQ_HEAD(conn_list, conn);

struct worker {
	struct event_base	*base;
	struct upstreams	*upstreams;
	struct conn_list	 conns;
	unsigned		 nconns;
	struct listener		*listener;
	struct event		*reaper;
	SLIST_HEAD(, grave)	 graveyard;
};

struct server {
	struct config		*conf;
	struct worker		*worker;
	struct admin		*admin;
	struct event		*sig_term;
	struct event		*sig_int;
	struct event		*sig_hup;
	struct event		*sig_usr1;
	struct event		*drain_timer;
	int			 draining;	/* SIGTERM seen */
	int			 stopping;	/* drain over: cancel everything */
};

extern struct server	*server;

/* 0 / -1 with the reason logged; the caller exits 2 on -1. */
int	server_start(struct config *);
/* Runs until the drain is over. */
void	server_run(void);
void	server_free(void);

/* An event loop with its curl multi, no listeners yet. */
struct worker	*worker_new(struct config *);
void		 worker_free(struct worker *);
/* Free fn(ptr) after the current callback, on w's loop. */
void	worker_defer_free(struct worker *, void (*fn)(void *), void *ptr);
/* A client connection has gone: resume accepting, maybe end a drain. */
void	worker_conn_gone(struct worker *);
int	worker_accepting(const struct worker *);

#endif
