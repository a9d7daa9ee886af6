/*
 * cancel.c: the cancel cell (see cancel.h for the promise).
 */
#include <stddef.h>

#include "cancel.h"

static const char *const reason_names[CANCEL_NREASONS] = {
	[CANCEL_NONE] = "none",
	[CANCEL_CLIENT_CLOSED] = "client_closed",
	[CANCEL_DEADLINE] = "deadline",
	[CANCEL_SHUTDOWN] = "shutdown",
	[CANCEL_SUPERSEDED] = "superseded",
};

void
cancel_init(struct cancel *c, struct cancel *parent, cancel_cb cb, void *arg)
{
	c->reason = CANCEL_NONE;
	c->flipping = 0;
	c->parent = NULL;
	TAILQ_INIT(&c->children);
	c->cb = cb;
	c->arg = arg;
	if (parent != NULL) {
		c->parent = parent;
		TAILQ_INSERT_TAIL(&parent->children, c, entry);
	}
}

void
cancel_detach(struct cancel *c)
{
	struct cancel	*child;

	if (c->parent != NULL) {
		TAILQ_REMOVE(&c->parent->children, c, entry);
		c->parent = NULL;
	}
	while ((child = TAILQ_FIRST(&c->children)) != NULL) {
		TAILQ_REMOVE(&c->children, child, entry);
		child->parent = NULL;
	}
}

int
cancel_flip(struct cancel *c, enum cancel_reason reason)
{
	struct cancel	*child, *next;

	if (c->reason != CANCEL_NONE || reason == CANCEL_NONE)
		return (0);
	c->reason = reason;
	c->flipping = 1;

	/*
	 * Children first, so that when our own callback runs every piece of
	 * work below us has already stopped. A child's callback may detach
	 * that child (or a later one), hence the saved next.
	 */
	for (child = TAILQ_FIRST(&c->children); child != NULL; child = next) {
		next = TAILQ_NEXT(child, entry);
		cancel_flip(child, reason);
	}
	c->flipping = 0;
	if (c->cb != NULL)
		c->cb(c, reason, c->arg);
	return (1);
}

int
cancel_is_set(const struct cancel *c)
{
	return (c->reason != CANCEL_NONE);
}

enum cancel_reason
cancel_reason_of(const struct cancel *c)
{
	return (c->reason);
}

const char *
cancel_reason_name(enum cancel_reason r)
{
	if (r < 0 || r >= CANCEL_NREASONS)
		return ("unknown");
	return (reason_names[r]);
}
