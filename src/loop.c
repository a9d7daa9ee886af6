/*
 * loop.c: the per-thread context (see loop.h) and its graveyard.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "loop.h"

static void
loop_reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loop	*l = arg;
	struct grave	*g;

	while ((g = SLIST_FIRST(&l->graveyard)) != NULL) {
		SLIST_REMOVE_HEAD(&l->graveyard, entry);
		g->fn(g->ptr);	/* frees g too: it is part of the object */
	}
}

int
loop_init(struct loop *l, struct event_base *base)
{
	memset(l, 0, sizeof *l);
	l->base = base;
	TAILQ_INIT(&l->conns);
	SLIST_INIT(&l->graveyard);
	if ((l->rbuf = malloc(LOOP_RBUF_SIZE)) == NULL ||
	    (l->head = evbuffer_new()) == NULL ||
	    (l->reaper = event_new(base, -1, 0, loop_reap_cb, l)) == NULL) {
		free(l->rbuf);
		l->rbuf = NULL;
		if (l->head != NULL)
			evbuffer_free(l->head);
		l->head = NULL;
		return (-1);
	}
	return (0);
}

void
loop_clear(struct loop *l)
{
	if (l->reaper == NULL)
		return;
	loop_reap_cb(-1, 0, l);
	event_free(l->reaper);
	l->reaper = NULL;
	free(l->rbuf);
	l->rbuf = NULL;
	evbuffer_free(l->head);
	l->head = NULL;
}

void
loop_defer_free(struct loop *l, struct grave *g, void (*fn)(void *),
    void *ptr)
{
	g->fn = fn;
	g->ptr = ptr;
	SLIST_INSERT_HEAD(&l->graveyard, g, entry);
	event_active(l->reaper, EV_TIMEOUT, 0);
}

int
loop_draining(const struct loop *l)
{
	return (l->draining || (l->announced != NULL &&
	    __atomic_load_n(l->announced, __ATOMIC_RELAXED)));
}
