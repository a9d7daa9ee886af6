/*
 * loop.h: what everything on one event-loop thread shares, handed down to
 * the connections, streams and requests of that thread: its event_base,
 * its upstreams (one curl multi), the configuration new work starts on,
 * whether a drain is on, its client connections, and the graveyard.
 *
 * The graveyard: an object that a callback further up the stack may still
 * hold is not freed on the spot, but handed to loop_defer_free(), which
 * frees it once the current event callback has returned (PgBouncer's
 * just-freed lists, tmux's deferred unref). A struct grave sits inside the
 * object itself, so deferring a free allocates nothing and cannot fail.
 *
 * The worker (worker.h) owns a loop and fills in what only it knows; the
 * rooms below it see this and nothing of the worker or the server.
 */
#ifndef FANOUTD_LOOP_H
#define FANOUTD_LOOP_H

#include <sys/queue.h>

struct config;
struct conn;
struct event;
struct event_base;
struct evbuffer;
struct upstreams;

struct grave {
	SLIST_ENTRY(grave)	 entry;
	void			(*fn)(void *);
	void			*ptr;
};

TAILQ_HEAD(conn_list, conn);

struct loop {
	struct event_base	*base;
	struct upstreams	*upstreams;
	struct config		*conf;		/* a reference: new work takes it */
	struct conn_list	 conns;		/* the client connections */
	unsigned		 nconns;
	int			 draining;	/* this loop has begun its drain */
	const int		*announced;	/* the process's drain flag (atomic) */
	/* A client connection opened or went (counted by the owner). */
	void			(*conn_opened)(void *);
	void			(*conn_gone)(void *);
	void			*owner;
	struct event		*reaper;
	SLIST_HEAD(, grave)	 graveyard;
	/*
	 * A clear-text client read lands here, and only what it read is
	 * copied into the connection's input buffer: reserving room in that
	 * buffer instead makes libevent allocate (and, once the request is
	 * parsed, free) a 32 KiB chain for every request of 80 bytes.
	 */
	char			*rbuf;		/* LOOP_RBUF_SIZE bytes */
	/*
	 * A response head's fields are written here and then moved whole
	 * into the client's output (both front ends take the chains): one
	 * buffer for the thread, not an evbuffer made and freed per answer.
	 * head_busy: lent out (request_headers_new); a second head built
	 * meanwhile gets a buffer of its own.
	 */
	struct evbuffer		*head;
	int			 head_busy;
};

#define LOOP_RBUF_SIZE	16384

/* 0, or -1 (out of memory). base and the hooks are the caller's to set. */
int	loop_init(struct loop *, struct event_base *);
/* Free what waits in the graveyard now, then the loop's own events. */
void	loop_clear(struct loop *);
/* Free fn(ptr) after the current callback. Once per object. */
void	loop_defer_free(struct loop *, struct grave *, void (*)(void *),
	    void *);
/*
 * A drain is on: this loop's own, or announced to the process already
 * (/healthz says draining before each loop has run its drain job, and an
 * answer given in between must say so too).
 */
int	loop_draining(const struct loop *);

#endif
