/*
 * listener.h: listening sockets.
 *
 * A listener set binds a list of addresses and can be moved to another
 * list (SIGHUP): addresses in both keep their socket, so nothing queued on
 * them is lost; new ones are bound first, and only when all of them bind
 * are the dropped ones closed. An address the process does not hold yet
 * must not be held by any other socket either (SO_REUSEPORT would let a
 * twin process share it): its bind fails, and the log names the holder.
 */
#ifndef FANOUTD_LISTENER_H
#define FANOUTD_LISTENER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct loop;
struct evconnlistener;
struct event_base;

/* Hooks: attach takes a fresh, disabled evconnlistener and returns a
 * handle (NULL on failure); detach releases the handle and the socket. */
struct lset_ops {
	void	*(*attach)(void *, struct evconnlistener *,
		    const struct listen_addr *);
	void	 (*detach)(void *, void *, struct evconnlistener *);
};

struct lset_entry {
	struct listen_addr	 addr;
	struct evconnlistener	*el;
	void			*handle;
};

struct lset {
	struct event_base	*base;
	const struct lset_ops	*ops;
	void			*arg;
	const char		*what;		/* for logs: "" or " (admin)" */
	int			 reuseport;
	int			 first;		/* binds new addresses first */
	int			 paused;	/* by the owner (max_connections) */
	int			 backoff;	/* out of descriptors */
	int			 episode;	/* that was logged */
	uint64_t		 last_error_ms;
	struct event		*retry;
	struct lset_entry	 e[CONFIG_MAX_LISTEN];
	size_t			 n;
};

/* A move in two steps, so that several sets can move together or not at
 * all: prepare binds what is new (nothing is closed); commit closes what
 * was dropped; abort closes what prepare bound. */
struct lset_change {
	struct lset_entry	 next[CONFIG_MAX_LISTEN];
	size_t			 n;
	int			 kept[CONFIG_MAX_LISTEN];	/* old index */
	int			 fresh[CONFIG_MAX_LISTEN];	/* new index */
};

int	lset_init(struct lset *, struct event_base *, const struct lset_ops *,
	    void *, const char *);
/* accept(2) failed with this errno: back off when out of descriptors. */
void	lset_accept_error(struct lset *, int);
void	lset_accept_ok(struct lset *);
void	lset_pause(struct lset *, int);
/* Make the set listen on exactly these addresses. 0, or -1 with nothing
 * changed and the reason logged. */
int	lset_update(struct lset *, const struct listen_addr *, size_t);
int	lset_prepare(struct lset *, const struct listen_addr *, size_t,
	    struct lset_change *);
void	lset_commit(struct lset *, struct lset_change *);
void	lset_abort(struct lset *, struct lset_change *);
void	lset_clear(struct lset *);

/*
 * The client listeners of one event loop; what they accept goes to the
 * front end (front_accept). At max_connections, which counts every
 * loop's connections, the owner's hooks say so: full() whether one more
 * connection fits, paused() that this listener stopped accepting (the
 * others should too).
 */
struct listener_hooks {
	int	(*full)(void *);
	void	(*paused)(void *);
};

struct listener	*listener_new(struct loop *, unsigned id, const struct config *,
		    const struct listener_hooks *, void *);
struct lset	*listener_set(struct listener *);
void		 listener_free(struct listener *);
/* Stop or resume accepting (max_connections); the sockets stay bound. */
void		 listener_pause(struct listener *);
void		 listener_resume(struct listener *);
int		 listener_paused(const struct listener *);

#endif
