/*
 * server.c: start-up, signals, reload and drain; the main thread.
 *
 * Signals arrive through libevent (evsignal), so every handler here runs
 * as an ordinary callback on the main loop, never in signal context.
 *
 * Drain (SIGTERM, SIGINT): every worker closes its listeners and its idle
 * connections and marks the rest to close after their answer; /healthz
 * turns 503. After drain_timeout (or a second SIGTERM) what is left is
 * cancelled with reason shutdown. The process exits once every worker has
 * no connection left.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "accesslog.h"
#include "admin.h"
#include "config.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "server.h"
#include "util.h"
#include "worker.h"

/* After the drain is over: at most this long to flush the last answers. */
#define STOP_GRACE_MS	1000

static struct server {
	struct config		*conf;
	struct event_base	*base;		/* the main thread's */
	struct worker		**workers;
	unsigned		 nworkers;
	struct admin		*admin;
	struct event		*sig_term;
	struct event		*sig_int;
	struct event		*sig_hup;
	struct event		*sig_usr1;
	struct event		*drain_timer;
	struct event		*idle_check;	/* workers poke it when idle */
	int			 draining;	/* SIGTERM seen (atomic) */
	int			 stopping;	/* drain over (main thread) */
	unsigned		 idle_workers;	/* atomic */
	unsigned		 nconns;	/* all workers' (atomic) */
	unsigned		 max_conns;	/* in effect (atomic) */
	unsigned long		 nofile;	/* the descriptor limit */
	unsigned long		 warned_need;	/* the figure last warned of */
} the_server, *server = &the_server;

static int
server_draining(void)
{
	return (__atomic_load_n(&server->draining, __ATOMIC_RELAXED));
}

/* Idle upstream connections curl may keep, per worker. */
#define POOL_MAX	1024
/* Descriptors for everything but connections: listeners, logs, ... */
#define FD_RESERVE	64

/* ---- what the workers ask of all of them together (any thread) ------------ */

static void
server_conn_opened(void)
{
	__atomic_add_fetch(&server->nconns, 1, __ATOMIC_RELAXED);
}

static void
server_conn_closed(void)
{
	__atomic_sub_fetch(&server->nconns, 1, __ATOMIC_RELAXED);
}

static int
server_conns_full(void)
{
	return (__atomic_load_n(&server->nconns, __ATOMIC_RELAXED) >=
	    __atomic_load_n(&server->max_conns, __ATOMIC_RELAXED));
}

/* Idle upstream connections each worker's curl may keep. */
static unsigned long
server_pool_size(void)
{
	unsigned long	pool = server->nofile / (8 * server->nworkers);

	return (pool > POOL_MAX ? POOL_MAX : pool < 4 ? 4 : pool);
}

/*
 * max_connections as configured; with a warning when the descriptor
 * limit cannot serve that many busy connections (each takes its own
 * descriptor and one per leg), since a transfer that cannot get a socket
 * fails (503, over capacity). The warning names both ways out with their
 * figures, and is given once: again only when a reload changes the
 * figure, not at every reload of the same configuration.
 */
static unsigned
server_max_conns(const struct config *conf)
{
	unsigned long	per = 1, legs, need, base, fit;
	size_t		i;

	for (i = 0; i < conf->nroutes; i++) {
		legs = conf->routes[i]->mode == MODE_PROXY ? 1 :
		    conf->routes[i]->nupstreams;
		if (1 + legs > per)
			per = 1 + legs;
	}
	base = FD_RESERVE + server->nworkers * server_pool_size();
	need = base + (unsigned long)conf->max_connections * per;
	if (need <= server->nofile) {
		server->warned_need = 0;
		return (conf->max_connections);
	}
	if (need == server->warned_need)
		return (conf->max_connections);
	server->warned_need = need;
	fit = server->nofile > base ? (server->nofile - base) / per : 0;
	if (fit > 0)
		log_warnx("max_connections %u, all busy, may need %lu "
		    "descriptors; the limit is %lu: raise LimitNOFILE (or "
		    "ulimit -n) to %lu, or lower max_connections to %lu",
		    conf->max_connections, need, server->nofile, need, fit);
	else
		log_warnx("max_connections %u, all busy, may need %lu "
		    "descriptors; the limit is %lu: raise LimitNOFILE (or "
		    "ulimit -n) to %lu",
		    conf->max_connections, need, server->nofile, need);
	return (conf->max_connections);
}

/* 1 when every worker's loop turned within max_ms (the watchdog asks). */
static int
server_workers_alive(uint64_t max_ms)
{
	uint64_t	now = now_ms(), beat;
	unsigned	i;

	for (i = 0; i < server->nworkers; i++) {
		beat = worker_beat(server->workers[i]);
		if (now > beat && now - beat > max_ms) {
			log_warnx("worker loop stuck for %llu ms, not telling "
			    "the watchdog worker=%u",
			    (unsigned long long)(now - beat), i);
			return (0);
		}
	}
	return (1);
}

/* Worker from reached max_connections: the others stop accepting too. */
static void
server_worker_paused(struct worker *from)
{
	unsigned	i;

	for (i = 0; i < server->nworkers; i++) {
		if (server->workers[i] != from)
			worker_call(server->workers[i], worker_pause, NULL, 0);
	}
}

/* A worker has drained: the last one ends the process's loop. */
static void
server_worker_idle(struct worker *w)
{
	__atomic_add_fetch(&server->idle_workers, 1, __ATOMIC_ACQ_REL);
	event_active(server->idle_check, EV_TIMEOUT, 0);
}

static const struct worker_hooks server_worker_hooks = {
	server_conn_opened,
	server_conn_closed,
	server_conns_full,
	server_worker_paused,
	server_worker_idle,
};

/* ---- reload, in two steps on every worker -------------------------------- */

struct reload_job {
	struct config		*conf;
	struct lset_change	 ch;
	int			 prepared;
};

static void
reload_prepare_job(struct worker *w, void *arg)
{
	struct reload_job	*j = arg;

	j->prepared = 0;
	if (w->listener == NULL)
		return;
	if (lset_prepare(listener_set(w->listener), j->conf->listen,
	    j->conf->nlisten, &j->ch) == 0)
		j->prepared = 1;
}

static void
reload_commit_job(struct worker *w, void *arg)
{
	struct reload_job	*j = arg;

	if (j->prepared)
		lset_commit(listener_set(w->listener), &j->ch);
	worker_set_conf(w, j->conf);
}

static void
reload_abort_job(struct worker *w, void *arg)
{
	struct reload_job	*j = arg;

	if (j->prepared)
		lset_abort(listener_set(w->listener), &j->ch);
}

/* ---- on the main thread ----------------------------------------------------- */

static void
server_idle_check_cb(evutil_socket_t fd, short what, void *arg)
{
	if (__atomic_load_n(&server->idle_workers, __ATOMIC_ACQUIRE) ==
	    server->nworkers) {
		log_info("drained, exiting");
		event_base_loopbreak(server->base);
	}
}

static void
server_stop(void)
{
	unsigned	i;

	if (!server->stopping) {
		server->stopping = 1;
		log_info("cancelling in-flight requests");
		evtimer_add_ms(server->drain_timer, STOP_GRACE_MS);
	}
	/* The second time (grace over, or asked again) closes what is left. */
	for (i = 0; i < server->nworkers; i++)
		worker_call(server->workers[i], worker_stop, NULL, 0);
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
	const char	*name = sig == SIGINT ? "SIGINT" : "SIGTERM";
	uint64_t	 ms = server->conf->drain_timeout_ms;
	unsigned	 i;

	if (server_draining()) {
		log_info("signal %s again, stopping now", name);
		server_stop();
		return;
	}
	log_info("signal %s, draining drain_timeout_ms=%llu", name,
	    (unsigned long long)ms);
	__atomic_store_n(&server->draining, 1, __ATOMIC_RELAXED);
	notify_stopping();
	for (i = 0; i < server->nworkers; i++)
		worker_call(server->workers[i], worker_drain, NULL, 0);
	evtimer_add_ms(server->drain_timer, ms);
}

/*
 * SIGHUP: parse and validate a whole new configuration, bind what it adds
 * (every worker's client addresses and the admin ones, or none of them),
 * and only then swap. Requests in flight keep the configuration they hold
 * a reference to.
 */
static void
server_reload(void)
{
	struct config		*conf, *old = server->conf;
	struct reload_job	*jobs = NULL;
	struct lset_change	 admin_ch;
	char			*errors = NULL, *line, *next;
	unsigned		 i, n = 0;

	log_info("signal SIGHUP, reloading %s", old->path);
	notify_reloading();
	if ((conf = config_load(old->path, &errors)) == NULL) {
		/* One log line per problem, each FILE:LINE: message; the
		 * warnings among them stay warnings. */
		for (line = errors; line != NULL && *line != '\0'; line = next) {
			if ((next = strchr(line, '\n')) != NULL)
				*next++ = '\0';
			if (strstr(line, ": warning: ") != NULL)
				log_warnx("reload: %s", line);
			else
				log_error("reload: %s", line);
		}
		free(errors);
		goto fail;
	}
	config_log_warnings(conf, "reload: ");
	if (conf->workers != old->workers)
		log_warnx("reload: a new number of workers takes a restart "
		    "running=%u configured=%u", server->nworkers, conf->workers);
	if ((jobs = calloc(server->nworkers, sizeof *jobs)) == NULL)
		goto fail;
	if (!server_draining()) {
		for (n = 0; n < server->nworkers; n++) {
			jobs[n].conf = conf;
			worker_call(server->workers[n], reload_prepare_job,
			    &jobs[n], 1);
			if (server->workers[n]->listener != NULL &&
			    !jobs[n].prepared) {
				n++;
				goto undo;
			}
		}
	}
	if (lset_prepare(admin_set(server->admin), conf->admin_listen,
	    conf->nadmin_listen, &admin_ch) == -1)
		goto undo;
	if (strcmp(conf->access_log, old->access_log) != 0 &&
	    accesslog_open(conf->access_log) == -1) {
		log_error("reload: cannot open access log %s error=\"%s\"",
		    conf->access_log, strerror(errno));
		lset_abort(admin_set(server->admin), &admin_ch);
		goto undo;
	}
	lset_commit(admin_set(server->admin), &admin_ch);
	for (i = 0; i < server->nworkers; i++) {
		jobs[i].conf = conf;
		worker_call(server->workers[i], reload_commit_job, &jobs[i], 1);
	}
	free(jobs);

	log_set_level(conf->log_level);
	__atomic_store_n(&server->max_conns, server_max_conns(conf),
	    __ATOMIC_RELAXED);
	server->conf = conf;
	config_unref(old);
	metrics_config_reload(1);
	log_info("reloaded %s", conf->path);
	notify_ready();
	return;
undo:
	for (i = 0; i < n; i++)
		worker_call(server->workers[i], reload_abort_job, &jobs[i], 1);
fail:
	log_error("reload failed, keeping the running configuration");
	free(jobs);
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
server_start(struct config *conf, unsigned long nofile)
{
	struct event_config	*cfg;
	struct worker		*w;
	unsigned		 i;

	server->conf = config_ref(conf);
	server->nofile = nofile;
	/* drain_timeout on the precise clock, like the workers' timers. */
	if ((cfg = event_config_new()) != NULL) {
		event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
		server->base = event_base_new_with_config(cfg);
		event_config_free(cfg);
	}
	if (server->base == NULL) {
		log_error("cannot set up the event loop");
		return (-1);
	}
	server->nworkers = conf->workers ? conf->workers : 1;
	server->max_conns = server_max_conns(conf);
	if ((server->workers = calloc(server->nworkers,
	    sizeof *server->workers)) == NULL)
		return (-1);
	for (i = 0; i < server->nworkers; i++) {
		if ((w = server->workers[i] = worker_new(i, conf,
		    server_pool_size(), &server_worker_hooks,
		    &server->draining)) == NULL)
			return (-1);
		/* Bound here, before the thread runs: start-up fails whole. */
		if (worker_listen(w, conf) == -1)
			return (-1);
	}
	if ((server->admin = admin_new(server->base, conf,
	    &server->draining, &server->conf)) == NULL)
		return (-1);
	server->sig_term = evsignal_new(server->base, SIGTERM, server_sigterm_cb,
	    NULL);
	server->sig_int = evsignal_new(server->base, SIGINT, server_sigterm_cb,
	    NULL);
	server->sig_hup = evsignal_new(server->base, SIGHUP, server_sighup_cb,
	    NULL);
	server->sig_usr1 = evsignal_new(server->base, SIGUSR1, server_sigusr1_cb,
	    NULL);
	server->drain_timer = evtimer_new(server->base, server_drain_timer_cb,
	    NULL);
	server->idle_check = event_new(server->base, -1, 0,
	    server_idle_check_cb, NULL);
	if (server->sig_term == NULL || server->sig_int == NULL ||
	    server->sig_hup == NULL || server->sig_usr1 == NULL ||
	    server->drain_timer == NULL || server->idle_check == NULL) {
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
	sigset_t	set, old;
	unsigned	i, started;

	/* Signals go to the main thread only: workers block them all. */
	sigfillset(&set);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	for (started = 0; started < server->nworkers; started++) {
		if (worker_start(server->workers[started]) == -1)
			break;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	if (started == server->nworkers) {
		notify_init(server->base, server_workers_alive);
		notify_ready();
		log_info("fanoutd ready workers=%u", server->nworkers);
		event_base_dispatch(server->base);
	}
	for (i = 0; i < started; i++)
		worker_join(server->workers[i]);
}

void
server_free(void)
{
	struct event	**evs[] = { &server->sig_term, &server->sig_int,
			    &server->sig_hup, &server->sig_usr1,
			    &server->drain_timer, &server->idle_check };
	size_t		  i;

	for (i = 0; i < sizeof evs / sizeof evs[0]; i++) {
		if (*evs[i] != NULL)
			event_free(*evs[i]);
		*evs[i] = NULL;
	}
	notify_free();
	admin_free(server->admin);
	server->admin = NULL;
	for (i = 0; server->workers != NULL && i < server->nworkers; i++)
		worker_free(server->workers[i]);
	free(server->workers);
	server->workers = NULL;
	if (server->base != NULL)
		event_base_free(server->base);
	server->base = NULL;
	if (server->conf != NULL)
		config_unref(server->conf);
	server->conf = NULL;
}
