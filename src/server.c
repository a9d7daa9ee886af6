/*
 * server.c: start-up, signals, drain, and the worker's loop.
 *
 * Signals arrive through libevent (evsignal), so every handler here runs
 * as an ordinary callback on the loop, never in signal context.
 *
 * Drain (SIGTERM, SIGINT): the listeners close, /healthz turns 503, idle
 * connections close, everything else gets drain_timeout to finish, with
 * Connection: close on every answer. Then whatever is left is cancelled
 * with reason shutdown. A second SIGTERM skips the wait. The loop ends
 * when the last client connection has gone.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "accesslog.h"
#include "admin.h"
#include "config.h"
#include "front.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "server.h"
#include "upstream.h"

/* After the drain is over: at most this long to flush the last answers. */
#define STOP_GRACE_MS	1000

static struct server	 the_server;
struct server		*server = &the_server;

static void	server_check_done(void);

static void
worker_reaper_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker	*w = arg;
	struct grave	*g;

	while ((g = SLIST_FIRST(&w->graveyard)) != NULL) {
		SLIST_REMOVE_HEAD(&w->graveyard, entry);
		g->fn(g->ptr);
		free(g);
	}
}

void
worker_defer_free(struct worker *w, void (*fn)(void *), void *ptr)
{
	struct grave	*g;

	if ((g = malloc(sizeof *g)) == NULL)
		fatal("worker_defer_free");
	g->fn = fn;
	g->ptr = ptr;
	SLIST_INSERT_HEAD(&w->graveyard, g, entry);
	event_active(w->reaper, EV_TIMEOUT, 0);
}

void
worker_conn_gone(struct worker *w)
{
	w->nconns--;
	if (w->listener != NULL && listener_paused(w->listener) &&
	    w->nconns < server->conf->max_connections)
		listener_resume(w->listener);
	server_check_done();
}

struct worker *
worker_new(struct config *conf)
{
	struct worker	*w;

	if ((w = calloc(1, sizeof *w)) == NULL)
		return (NULL);
	TAILQ_INIT(&w->conns);
	SLIST_INIT(&w->graveyard);
	if ((w->base = event_base_new()) == NULL)
		goto fail;
	if ((w->reaper = event_new(w->base, -1, 0, worker_reaper_cb, w)) == NULL)
		goto fail;
	if ((w->upstreams = upstreams_new(w->base)) == NULL)
		goto fail;
	return (w);
fail:
	log_error("cannot set up the event loop");
	if (w->reaper != NULL)
		event_free(w->reaper);
	if (w->base != NULL)
		event_base_free(w->base);
	free(w);
	return (NULL);
}

void
worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	listener_free(w->listener);
	upstreams_free(w->upstreams);
	worker_reaper_cb(-1, 0, w);
	event_free(w->reaper);
	event_base_free(w->base);
	free(w);
}

static void
server_check_done(void)
{
	if (server->draining && server->worker->nconns == 0) {
		log_info("drained, exiting");
		event_base_loopbreak(server->worker->base);
	}
}

static void
server_stop(void)
{
	struct timeval	tv = { STOP_GRACE_MS / 1000, (STOP_GRACE_MS % 1000) * 1000 };

	if (server->stopping) {
		/* Grace over, or asked twice: close whatever is left. */
		front_stop(server->worker);
		return;
	}
	server->stopping = 1;
	log_info("cancelling in-flight requests connections=%u",
	    server->worker->nconns);
	front_stop(server->worker);
	evtimer_add(server->drain_timer, &tv);
	server_check_done();
}

static void
server_drain_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	if (!server->stopping)
		log_info("drain timeout passed");
	server_stop();
}

static void
server_sigterm_cb(evutil_socket_t sig, short what, void *arg)
{
	struct timeval	tv;
	uint64_t	ms = server->conf->drain_timeout_ms;

	if (server->draining) {
		log_info("signal %s again, stopping now",
		    sig == SIGINT ? "SIGINT" : "SIGTERM");
		server_stop();
		return;
	}
	log_info("signal %s, draining connections=%u drain_timeout_ms=%llu",
	    sig == SIGINT ? "SIGINT" : "SIGTERM", server->worker->nconns,
	    (unsigned long long)ms);
	server->draining = 1;
	notify_stopping();
	listener_free(server->worker->listener);
	server->worker->listener = NULL;
	front_drain(server->worker);
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(server->drain_timer, &tv);
	server_check_done();
}

/*
 * SIGHUP: parse and validate a whole new configuration, bind what it adds
 * (client and admin addresses together, or neither), and only then swap.
 * Requests in flight keep the configuration they hold a reference to.
 */
static void
server_reload(void)
{
	struct config		*conf, *old = server->conf;
	struct lset_change	 front_ch, admin_ch;
	struct lset		*front = NULL;
	char			*errors = NULL, *line, *next;

	log_info("signal SIGHUP, reloading %s", old->path);
	notify_reloading();
	if ((conf = config_load(old->path, &errors)) == NULL) {
		/* One log line per problem, each FILE:LINE: message. */
		for (line = errors; line != NULL && *line != '\0'; line = next) {
			if ((next = strchr(line, '\n')) != NULL)
				*next++ = '\0';
			log_error("reload: %s", line);
		}
		log_error("reload failed, keeping the running configuration");
		free(errors);
		goto fail;
	}
	if (conf->workers != old->workers)
		log_warnx("reload: workers changes at the next restart "
		    "running=%u configured=%u", old->workers, conf->workers);
	if (server->worker->listener != NULL) {
		front = listener_set(server->worker->listener);
		if (lset_prepare(front, conf->listen, conf->nlisten,
		    &front_ch) == -1)
			goto fail;
	}
	if (lset_prepare(admin_set(server->admin), conf->admin_listen,
	    conf->nadmin_listen, &admin_ch) == -1) {
		if (front != NULL)
			lset_abort(front, &front_ch);
		goto fail;
	}
	if (strcmp(conf->access_log, old->access_log) != 0 &&
	    accesslog_open(conf->access_log) == -1) {
		log_warn("reload failed: cannot open access log %s",
		    conf->access_log);
		if (front != NULL)
			lset_abort(front, &front_ch);
		lset_abort(admin_set(server->admin), &admin_ch);
		goto fail;
	}
	if (front != NULL)
		lset_commit(front, &front_ch);
	lset_commit(admin_set(server->admin), &admin_ch);

	log_set_level(conf->log_level);
	server->conf = conf;
	config_unref(old);
	metrics_config_reload(1);
	log_info("reloaded %s", conf->path);
	notify_ready();
	return;
fail:
	if (conf != NULL)
		config_unref(conf);
	metrics_config_reload(0);
	notify_ready();
}

static void
server_sighup_cb(evutil_socket_t sig, short what, void *arg)
{
	server_reload();
}

static void
server_sigusr1_cb(evutil_socket_t sig, short what, void *arg)
{
	if (accesslog_reopen() == -1)
		log_warn("cannot reopen the access log");
	else
		log_info("signal SIGUSR1, access log reopened");
}

int
server_start(struct config *conf)
{
	struct event_base	*base;

	server->conf = config_ref(conf);
	if ((server->worker = worker_new(conf)) == NULL)
		return (-1);
	base = server->worker->base;
	if ((server->worker->listener = listener_new(server->worker, conf)) == NULL)
		return (-1);
	if ((server->admin = admin_new(base, conf)) == NULL)
		return (-1);
	server->sig_term = evsignal_new(base, SIGTERM, server_sigterm_cb, NULL);
	server->sig_int = evsignal_new(base, SIGINT, server_sigterm_cb, NULL);
	server->sig_hup = evsignal_new(base, SIGHUP, server_sighup_cb, NULL);
	server->sig_usr1 = evsignal_new(base, SIGUSR1, server_sigusr1_cb, NULL);
	server->drain_timer = evtimer_new(base, server_drain_timer_cb, NULL);
	if (server->sig_term == NULL || server->sig_int == NULL ||
	    server->sig_hup == NULL || server->sig_usr1 == NULL ||
	    server->drain_timer == NULL) {
		log_error("cannot set up signal handling");
		return (-1);
	}
	evsignal_add(server->sig_term, NULL);
	evsignal_add(server->sig_int, NULL);
	evsignal_add(server->sig_hup, NULL);
	evsignal_add(server->sig_usr1, NULL);
	return (0);
}

void
server_run(void)
{
	notify_init(server->worker->base);
	notify_ready();
	log_info("fanoutd ready");
	event_base_dispatch(server->worker->base);
}

void
server_free(void)
{
	struct event	**evs[] = { &server->sig_term, &server->sig_int,
			    &server->sig_hup, &server->sig_usr1,
			    &server->drain_timer };
	size_t		  i;

	for (i = 0; i < sizeof evs / sizeof evs[0]; i++) {
		if (*evs[i] != NULL)
			event_free(*evs[i]);
		*evs[i] = NULL;
	}
	notify_free();
	admin_free(server->admin);
	server->admin = NULL;
	worker_free(server->worker);
	server->worker = NULL;
	if (server->conf != NULL)
		config_unref(server->conf);
	server->conf = NULL;
}
