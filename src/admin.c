/*
 * admin.c: the admin listener. evhttp is good enough here: nothing on this
 * side waits for upstreams, so its habit of not reading while a handler
 * runs costs nothing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "admin.h"
#include "config.h"
#include "health.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"

struct admin {
	struct evhttp	*http;
	struct lset	 set;
	const int	*draining;	/* the process's drain flag (atomic) */
	struct config	*const *current;	/* the server's configuration */
};

static void
admin_reply(struct evhttp_request *req, int code, const char *reason,
    const char *type, struct evbuffer *body)
{
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", type);
	evhttp_send_reply(req, code, reason, body);
}

static void
admin_cb(struct evhttp_request *req, void *arg)
{
	struct admin	*a = arg;
	struct evbuffer	*body;
	const char	*path;

	if ((body = evbuffer_new()) == NULL) {
		evhttp_send_error(req, 503, NULL);
		return;
	}
	path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	if (path == NULL)
		path = "/";
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET &&
	    evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
		evbuffer_add_printf(body, "method not allowed\n");
		admin_reply(req, 405, "Method Not Allowed", "text/plain", body);
	} else if (strcmp(path, "/healthz") == 0) {
		if (__atomic_load_n(a->draining, __ATOMIC_RELAXED)) {
			evbuffer_add_printf(body, "draining\n");
			admin_reply(req, 503, "Service Unavailable",
			    "text/plain", body);
		} else {
			evbuffer_add_printf(body, "ok\n");
			admin_reply(req, 200, "OK", "text/plain", body);
		}
	} else if (strcmp(path, "/metrics") == 0) {
		metrics_render(body);
		if (*a->current != NULL)
			health_render(body, *a->current);
		admin_reply(req, 200, "OK",
		    "text/plain; version=0.0.4; charset=utf-8", body);
	} else {
		evbuffer_add_printf(body, "not found\n");
		admin_reply(req, 404, "Not Found", "text/plain", body);
	}
	evbuffer_free(body);
}

/* evhttp installs no error callback: without one, EMFILE spins. */
/* The one admin listener of the process: evhttp keeps the listeners'
 * argument for itself, so their error callback finds the set here. */
static struct admin	*the_admin;

static void
admin_accept_error_cb(struct evconnlistener *el, void *arg)
{
	if (the_admin != NULL)
		lset_accept_error(&the_admin->set, EVUTIL_SOCKET_ERROR());
}

static void *
admin_attach(void *arg, struct evconnlistener *el,
    const struct listen_addr *addr)
{
	struct admin		*a = arg;
	struct evhttp_bound_socket *b;

	if ((b = evhttp_bind_listener(a->http, el)) != NULL)
		evconnlistener_set_error_cb(el, admin_accept_error_cb);
	if (a->set.backoff)
		evconnlistener_disable(el);
	return (b);
}

static void
admin_detach(void *arg, void *handle, struct evconnlistener *el)
{
	struct admin	*a = arg;

	/* evhttp owns the listener once bound, and frees it here. */
	evhttp_del_accept_socket(a->http, handle);
}

static const struct lset_ops admin_ops = { admin_attach, admin_detach };

struct admin *
admin_new(struct event_base *base, const struct config *conf,
    const int *draining, struct config *const *current)
{
	struct admin	*a;

	if ((a = calloc(1, sizeof *a)) == NULL)
		return (NULL);
	if ((a->http = evhttp_new(base)) == NULL) {
		free(a);
		return (NULL);
	}
	evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	a->draining = draining;
	a->current = current;
	the_admin = a;
	evhttp_set_gencb(a->http, admin_cb, a);
	evhttp_set_timeout(a->http, 10);
	if (lset_init(&a->set, base, &admin_ops, a, " (admin)") == -1) {
		evhttp_free(a->http);
		free(a);
		return (NULL);
	}
	if (lset_update(&a->set, conf->admin_listen, conf->nadmin_listen) == -1) {
		admin_free(a);
		return (NULL);
	}
	return (a);
}

struct lset *
admin_set(struct admin *a)
{
	return (&a->set);
}

void
admin_free(struct admin *a)
{
	if (a == NULL)
		return;
	if (the_admin == a)
		the_admin = NULL;
	/* evhttp_free closes the bound sockets. */
	evhttp_free(a->http);
	if (a->set.retry != NULL)
		event_free(a->set.retry);
	free(a);
}
