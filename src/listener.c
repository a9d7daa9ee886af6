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
#include "loop.h"
#include "util.h"

#define ACCEPT_BACKOFF_MS	100
#define RECHECK_MS		50

struct listener {
	struct loop			*loop;
	const struct listener_hooks	*hooks;
	void				*arg;
	struct lset			 set;
	char		 what[32];	/* for the logs */
	struct event	*recheck;	/* while paused at max_connections */
};

/* ---- listener sets ------------------------------------------------------- */

static int
addr_equal(const struct listen_addr *a, const struct listen_addr *b)
{
	return (a->sslen == b->sslen && memcmp(&a->ss, &b->ss, a->sslen) == 0 &&
	    a->tls == b->tls);
}

static void	lset_retry_cb(evutil_socket_t, short, void *);
static void	listener_recheck_cb(evutil_socket_t, short, void *);

int
lset_init(struct lset *s, struct event_base *base, const struct lset_ops *ops,
    void *arg, const char *what)
{
	memset(s, 0, sizeof *s);
	s->base = base;
	s->ops = ops;
	s->arg = arg;
	s->what = what;
	if ((s->retry = evtimer_new(base, lset_retry_cb, s)) == NULL)
		return (-1);
	return (0);
}

/* Accepting on or off, for every socket of the set. */
static void
lset_enable(struct lset *s, int on)
{
	size_t	i;

	for (i = 0; i < s->n; i++) {
		if (on)
			evconnlistener_enable(s->e[i].el);
		else
			evconnlistener_disable(s->e[i].el);
	}
}

static void
lset_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lset	*s = arg;

	s->backoff = 0;
	if (!s->paused)
		lset_enable(s, 1);
}

/*
 * accept(2) failed. For want of descriptors the socket stays readable and
 * the loop would spin: stop accepting for a moment instead. One log line
 * per episode: an episode ends when accepting has worked for a while.
 */
void
lset_accept_error(struct lset *s, int err)
{
	struct timeval	tv = { 0, ACCEPT_BACKOFF_MS * 1000 };
	uint64_t	now = now_ms();

	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		log_warnx("accept failed%s error=\"%s\"", s->what, strerror(err));
		return;
	}
	/* An episode ends with a successful accept (lset_accept_ok) or, where
	 * accepts are not seen (evhttp), after a quiet while. */
	if (!s->episode || now - s->last_error_ms > 4 * ACCEPT_BACKOFF_MS)
		log_warnx("accept failed, pausing%s error=\"%s\"", s->what,
		    strerror(err));
	s->episode = 1;
	s->last_error_ms = now;
	s->backoff = 1;
	lset_enable(s, 0);
	evtimer_add(s->retry, &tv);
}

void
lset_accept_ok(struct lset *s)
{
	s->episode = 0;
}

void
lset_pause(struct lset *s, int paused)
{
	s->paused = paused;
	if (paused)
		lset_enable(s, 0);
	else if (!s->backoff)
		lset_enable(s, 1);
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
		ch->next[i].handle = s->ops->attach(s->arg, ch->next[i].el,
		    &addrs[i]);
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
		log_info("no longer listening on %s%s%s", s->e[i].addr.text,
		    s->e[i].addr.tls ? " tls" : "", s->what);
		s->ops->detach(s->arg, s->e[i].handle, s->e[i].el);
	}
	for (i = 0; i < ch->n; i++) {
		if (ch->fresh[i])
			log_info("listening on %s%s%s", ch->next[i].addr.text,
			    ch->next[i].addr.tls ? " tls" : "", s->what);
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
	if (s->retry != NULL)
		event_free(s->retry);
	s->retry = NULL;
}

/* ---- client listeners ---------------------------------------------------- */

/* What an accept callback is handed: the listener, and how to speak. */
struct listener_port {
	struct listener	*ls;
	int		 tls;
};

static void
listener_accept_cb(struct evconnlistener *el, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct listener_port	*lp = arg;
	struct listener		*ls = lp->ls;

	lset_accept_ok(&ls->set);
	front_accept(ls->loop, fd, sa, salen, lp->tls);
	if (ls->hooks->full(ls->arg) && !ls->set.paused) {
		log_info("max_connections reached, accepting paused%s "
		    "connections=%u", ls->what, ls->loop->nconns);
		listener_pause(ls);
		/* The others too, before their listeners take more; one
		 * may still slip in on each meanwhile. */
		ls->hooks->paused(ls->arg);
	}
}

static void
listener_error_cb(struct evconnlistener *el, void *arg)
{
	struct listener_port	*lp = arg;

	lset_accept_error(&lp->ls->set, EVUTIL_SOCKET_ERROR());
}

static void *
listener_attach(void *arg, struct evconnlistener *el,
    const struct listen_addr *addr)
{
	struct listener		*ls = arg;
	struct listener_port	*lp;

	if ((lp = calloc(1, sizeof *lp)) == NULL)
		return (NULL);
	lp->ls = ls;
	lp->tls = addr->tls;
	evconnlistener_set_error_cb(el, listener_error_cb);
	evconnlistener_set_cb(el, listener_accept_cb, lp);
	if (ls->set.paused || ls->set.backoff)
		evconnlistener_disable(el);
	return (lp);
}

static void
listener_detach(void *arg, void *handle, struct evconnlistener *el)
{
	evconnlistener_free(el);
	free(handle);
}

static const struct lset_ops listener_ops = {
	listener_attach, listener_detach
};

struct listener *
listener_new(struct loop *loop, unsigned id, const struct config *conf,
    const struct listener_hooks *hooks, void *arg)
{
	struct listener	*ls;

	if ((ls = calloc(1, sizeof *ls)) == NULL)
		return (NULL);
	ls->loop = loop;
	ls->hooks = hooks;
	ls->arg = arg;
	snprintf(ls->what, sizeof ls->what, " worker=%u", id);
	if (lset_init(&ls->set, loop->base, &listener_ops, ls, ls->what) == -1) {
		free(ls);
		return (NULL);
	}
	ls->set.reuseport = 1;
	if ((ls->recheck = evtimer_new(loop->base, listener_recheck_cb, ls)) ==
	    NULL || lset_update(&ls->set, conf->listen, conf->nlisten) == -1) {
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
	if (ls->recheck != NULL)
		event_free(ls->recheck);
	free(ls);
}

/*
 * Paused at max_connections, which counts every worker's connections: a
 * close on another worker does not reach us, so look again every so often.
 */
static void
listener_recheck_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener	*ls = arg;
	struct timeval	 tv = { 0, RECHECK_MS * 1000 };

	if (!ls->set.paused)
		return;
	if (!ls->hooks->full(ls->arg))
		listener_resume(ls);
	else
		evtimer_add(ls->recheck, &tv);
}

void
listener_pause(struct listener *ls)
{
	struct timeval	tv = { 0, RECHECK_MS * 1000 };

	lset_pause(&ls->set, 1);
	evtimer_add(ls->recheck, &tv);
}

void
listener_resume(struct listener *ls)
{
	evtimer_del(ls->recheck);
	lset_pause(&ls->set, 0);
}

int
listener_paused(const struct listener *ls)
{
	return (ls->set.paused);
}
