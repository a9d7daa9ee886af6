/*
 * listener.c: accepting client connections.
 *
 * When accept(2) fails for want of descriptors (EMFILE, ENFILE) the
 * listener would be readable forever and the loop would spin: instead it
 * is paused for a moment and the problem is logged once per episode.
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
	struct worker		*w;
	struct evconnlistener	*l[CONFIG_MAX_LISTEN];
	size_t			 n;
	int			 paused;
	int			 backoff;	/* paused for lack of fds */
	struct event		*retry;
};

static void
listener_accept_cb(struct evconnlistener *el, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct listener	*ls = arg;
	struct worker	*w = ls->w;

	front_accept(w, fd, sa, salen);
	if (w->nconns >= server->conf->max_connections && !ls->paused) {
		log_info("max_connections reached, accepting paused "
		    "connections=%u", w->nconns);
		listener_pause(ls);
	}
}

static void
listener_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener	*ls = arg;
	size_t		 i;

	ls->backoff = 0;
	if (ls->paused)
		return;
	for (i = 0; i < ls->n; i++)
		evconnlistener_enable(ls->l[i]);
}

static void
listener_error_cb(struct evconnlistener *el, void *arg)
{
	struct listener	*ls = arg;
	struct timeval	 tv = { 0, ACCEPT_BACKOFF_MS * 1000 };
	int		 err = EVUTIL_SOCKET_ERROR();
	size_t		 i;

	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		log_warnx("accept failed error=\"%s\"", strerror(err));
		return;
	}
	if (!ls->backoff)
		log_warnx("accept failed, pausing error=\"%s\"", strerror(err));
	ls->backoff = 1;
	for (i = 0; i < ls->n; i++)
		evconnlistener_disable(ls->l[i]);
	evtimer_add(ls->retry, &tv);
}

struct evconnlistener *
listener_bind(struct event_base *base, const struct listen_addr *a,
    void (*cb)(struct evconnlistener *, int, struct sockaddr *, int, void *),
    void *arg)
{
	unsigned	flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
			    LEV_OPT_CLOSE_ON_EXEC;

	if (a->ss.ss_family == AF_INET6)
		flags |= LEV_OPT_BIND_IPV6ONLY;
	return (evconnlistener_new_bind(base, cb, arg, flags, 1024,
	    (const struct sockaddr *)&a->ss, a->sslen));
}

struct listener *
listener_new(struct worker *w, const struct config *conf)
{
	struct listener	*ls;
	size_t		 i;

	if ((ls = calloc(1, sizeof *ls)) == NULL)
		return (NULL);
	ls->w = w;
	if ((ls->retry = evtimer_new(w->base, listener_retry_cb, ls)) == NULL)
		goto fail;
	for (i = 0; i < conf->nlisten; i++) {
		ls->l[i] = listener_bind(w->base, &conf->listen[i],
		    listener_accept_cb, ls);
		if (ls->l[i] == NULL) {
			log_error("cannot listen on %s error=\"%s\"",
			    conf->listen[i].text, strerror(errno));
			goto fail;
		}
		evconnlistener_set_error_cb(ls->l[i], listener_error_cb);
		ls->n++;
		log_info("listening on %s", conf->listen[i].text);
	}
	return (ls);
fail:
	listener_free(ls);
	return (NULL);
}

void
listener_free(struct listener *ls)
{
	size_t	i;

	if (ls == NULL)
		return;
	for (i = 0; i < ls->n; i++)
		evconnlistener_free(ls->l[i]);
	if (ls->retry != NULL)
		event_free(ls->retry);
	free(ls);
}

void
listener_pause(struct listener *ls)
{
	size_t	i;

	ls->paused = 1;
	for (i = 0; i < ls->n; i++)
		evconnlistener_disable(ls->l[i]);
}

void
listener_resume(struct listener *ls)
{
	size_t	i;

	ls->paused = 0;
	if (ls->backoff)
		return;
	for (i = 0; i < ls->n; i++)
		evconnlistener_enable(ls->l[i]);
}

int
listener_paused(const struct listener *ls)
{
	return (ls->paused);
}
