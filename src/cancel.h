/*
 * cancel.h: the cancel cell.
 *
 * Every request owns one (a new one for each request, pipelined ones
 * included, so a cancellation never reaches the next request); every
 * upstream leg of it owns a child. A cell
 * flips at most once, with one reason, and flipping a parent flips its
 * children first (with the parent's reason), then runs the cell's own
 * callback. Callbacks are how work is stopped: a leg's aborts its transfer,
 * a request's answers the client. Code between expensive steps may also poll
 * cancel_is_set(), which costs a load.
 *
 * Flipping never frees a cell; a callback may detach other cells, but not
 * free the one being flipped.
 */
#ifndef FANOUTD_CANCEL_H
#define FANOUTD_CANCEL_H

#include <sys/queue.h>

enum cancel_reason {
	CANCEL_NONE = 0,
	CANCEL_CLIENT_CLOSED,	/* the client's FIN or RST */
	CANCEL_DEADLINE,	/* the request's deadline passed */
	CANCEL_SHUTDOWN,	/* a drain ran out of time */
	CANCEL_SUPERSEDED,	/* the answer was decided without this leg */
	CANCEL_NREASONS
};

struct cancel;
typedef void	(*cancel_cb)(struct cancel *, enum cancel_reason, void *);

struct cancel {
	enum cancel_reason	 reason;
	unsigned		 flipping:1;
	struct cancel		*parent;
	TAILQ_HEAD(, cancel)	 children;
	TAILQ_ENTRY(cancel)	 entry;
	cancel_cb		 cb;
	void			*arg;
};

/* A live cell, attached under parent (may be NULL). */
void		 cancel_init(struct cancel *, struct cancel *parent,
		    cancel_cb, void *arg);
/* Detach from the parent and from every child. */
void		 cancel_detach(struct cancel *);
/* 1 if this call flipped the cell, 0 if it was already flipped. */
int		 cancel_flip(struct cancel *, enum cancel_reason);
int		 cancel_is_set(const struct cancel *);
enum cancel_reason cancel_reason_of(const struct cancel *);

const char	*cancel_reason_name(enum cancel_reason);

#endif
