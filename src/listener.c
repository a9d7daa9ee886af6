/*
 * listener.c: listening sockets, and accepting client connections.
 *
 * When accept(2) fails for want of descriptors (EMFILE, ENFILE) the
 * listener would stay readable and the loop would spin: instead accepting
 * pauses for a moment, and the problem is logged once per episode.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "config.h"
#include "front.h"
#include "listener.h"
#include "log.h"
#include "server.h"

#define ACCEPT_BACKOFF_MS	100

struct listener {
	struct worker	*w;
	struct lset	 set;
	int		 paused;	/* max_connections */
	int		 backoff;	/* out of descriptors */
	char		 what[32];	/* for the logs */
	struct event	*retry;
};

/* ---- listener sets ------------------------------------------------------- */

static int
addr_equal(const struct listen_addr *a, const struct listen_addr *b)
{
	return (a->sslen == b->sslen && memcmp(&a->ss, &b->ss, a->sslen) == 0);
}

void
lset_init(struct lset *s, struct event_base *base, const struct lset_ops *ops,
    void *arg, const char *what)
{
	memset(s, 0, sizeof *s);
	s->base = base;
	s->ops = ops;
	s->arg = arg;
	s->what = what;
}

static struct evconnlistener *
lset_bind(struct lset *s, const struct listen_addr *a)
{
	/* SO_REUSEPORT: one socket per worker on the same address, and the
	 * kernel spreads connections over them. */
	unsigned	flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
			    LEV_OPT_CLOSE_ON_EXEC |
			    (s->reuseport ? LEV_OPT_REUSEABLE_PORT : 0);

	if (a->ss.ss_family == AF_INET6)
		flags |= LEV_OPT_BIND_IPV6ONLY;
	/* No callback yet: the listener starts disabled. */
	return (evconnlistener_new_bind(s->base, NULL, NULL, flags, 1024,
	    (const struct sockaddr *)&a->ss, a->sslen));
}

int
lset_prepare(struct lset *s, const struct listen_addr *addrs, size_t n,
    struct lset_change *ch)
{
	size_t	i, j;

	memset(ch, 0, sizeof *ch);
	ch->n = n;
	for (i = 0; i < n; i++) {
		ch->next[i].addr = addrs[i];
		for (j = 0; j < s->n; j++) {
			if (!ch->kept[j] && addr_equal(&s->e[j].addr, &addrs[i])) {
				ch->next[i].el = s->e[j].el;
				ch->next[i].handle = s->e[j].handle;
				ch->kept[j] = 1;
				break;
			}
		}
		if (ch->next[i].el != NULL)
			continue;
		if ((ch->next[i].el = lset_bind(s, &addrs[i])) == NULL) {
			log_error("cannot listen on %s%s error=\"%s\"",
			    addrs[i].text, s->what, strerror(errno));
			goto fail;
		}
		ch->next[i].handle = s->ops->attach(s->arg, ch->next[i].el);
		if (ch->next[i].handle == NULL) {
			log_error("cannot listen on %s%s", addrs[i].text, s->what);
			evconnlistener_free(ch->next[i].el);
			ch->next[i].el = NULL;
			goto fail;
		}
		ch->fresh[i] = 1;
	}
	return (0);
fail:
	lset_abort(s, ch);
	return (-1);
}

void
lset_commit(struct lset *s, struct lset_change *ch)
{
	size_t	i;

	for (i = 0; i < s->n; i++) {
		if (ch->kept[i])
			continue;
		log_info("no longer listening on %s%s", s->e[i].addr.text,
		    s->what);
		s->ops->detach(s->arg, s->e[i].handle, s->e[i].el);
	}
	for (i = 0; i < ch->n; i++) {
		if (ch->fresh[i])
			log_info("listening on %s%s", ch->next[i].addr.text,
			    s->what);
	}
	memcpy(s->e, ch->next, sizeof s->e);
	s->n = ch->n;
	memset(ch, 0, sizeof *ch);
}

void
lset_abort(struct lset *s, struct lset_change *ch)
{
	size_t	i;

	/* Close only what the preparation bound. */
	for (i = 0; i < ch->n; i++) {
		if (ch->fresh[i] && ch->next[i].el != NULL)
			s->ops->detach(s->arg, ch->next[i].handle,
			    ch->next[i].el);
	}
	memset(ch, 0, sizeof *ch);
}

int
lset_update(struct lset *s, const struct listen_addr *addrs, size_t n)
{
	struct lset_change	ch;

	if (lset_prepare(s, addrs, n, &ch) == -1)
		return (-1);
	lset_commit(s, &ch);
	return (0);
}

void
lset_clear(struct lset *s)
{
	size_t	i;

	for (i = 0; i < s->n; i++)
		s->ops->detach(s->arg, s->e[i].handle, s->e[i].el);
	s->n = 0;
}

/* ---- client listeners ---------------------------------------------------- */

static void
listener_accept_cb(struct evconnlistener *el, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct listener	*ls = arg;
	struct worker	*w = ls->w;

	front_accept(w, fd, sa, salen);
	if (w->nconns >= w->max_conns && !ls->paused) {
		log_info("max_connections reached, accepting paused "
		    "connections=%u", w->nconns);
		listener_pause(ls);
	}
}

static void
listener_enable_all(struct listener *ls, int on)
{
	size_t	i;

	for (i = 0; i < ls->set.n; i++) {
		if (on)
			evconnlistener_enable(ls->set.e[i].el);
		else
			evconnlistener_disable(ls->set.e[i].el);
	}
}

static void
listener_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener	*ls = arg;

	ls->backoff = 0;
	if (!ls->paused)
		listener_enable_all(ls, 1);
}

static void
listener_error_cb(struct evconnlistener *el, void *arg)
{
	struct listener	*ls = arg;
	struct timeval	 tv = { 0, ACCEPT_BACKOFF_MS * 1000 };
	int		 err = EVUTIL_SOCKET_ERROR();

	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		log_warnx("accept failed error=\"%s\"", strerror(err));
		return;
	}
	if (!ls->backoff)
		log_warnx("accept failed, pausing error=\"%s\"", strerror(err));
	ls->backoff = 1;
	listener_enable_all(ls, 0);
	evtimer_add(ls->retry, &tv);
}

static void *
listener_attach(void *arg, struct evconnlistener *el)
{
	struct listener	*ls = arg;

	evconnlistener_set_error_cb(el, listener_error_cb);
	evconnlistener_set_cb(el, listener_accept_cb, ls);
	if (ls->paused || ls->backoff)
		evconnlistener_disable(el);
	return (el);
}

static void
listener_detach(void *arg, void *handle, struct evconnlistener *el)
{
	evconnlistener_free(el);
}

static const struct lset_ops listener_ops = {
	listener_attach, listener_detach
};

struct listener *
listener_new(struct worker *w, const struct config *conf)
{
	struct listener	*ls;

	if ((ls = calloc(1, sizeof *ls)) == NULL)
		return (NULL);
	ls->w = w;
	snprintf(ls->what, sizeof ls->what, " worker=%u", w->id);
	lset_init(&ls->set, w->base, &listener_ops, ls, ls->what);
	ls->set.reuseport = 1;
	if ((ls->retry = evtimer_new(w->base, listener_retry_cb, ls)) == NULL ||
	    lset_update(&ls->set, conf->listen, conf->nlisten) == -1) {
		listener_free(ls);
		return (NULL);
	}
	return (ls);
}

struct lset *
listener_set(struct listener *ls)
{
	return (&ls->set);
}

void
listener_free(struct listener *ls)
{
	if (ls == NULL)
		return;
	lset_clear(&ls->set);
	if (ls->retry != NULL)
		event_free(ls->retry);
	free(ls);
}

void
listener_pause(struct listener *ls)
{
	ls->paused = 1;
	listener_enable_all(ls, 0);
}

void
listener_resume(struct listener *ls)
{
	ls->paused = 0;
	if (!ls->backoff)
		listener_enable_all(ls, 1);
}

int
listener_paused(const struct listener *ls)
{
	return (ls->paused);
}
