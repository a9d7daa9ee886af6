/*
 * request.c: one request's life.
 *
 *	reading --dispatch--> running --(answer | cancel)--> done --> freed
 *
 * The request's cancel cell is the parent of one cell per leg. Flipping it
 * (client gone, deadline, drain) first runs every leg's callback, which
 * aborts that leg's transfer (curl closes the upstream connection) and
 * records the leg as cancelled; then the request's own callback answers the
 * client, or not, and ends the request. One path, request_end(), logs and
 * releases; the memory goes after the current callback (the loop's graveyard),
 * so nothing up the stack can touch freed memory.
 *
 * Which legs to send and when to answer is the route's mode's to say
 * (fanout.h): request_decide() asks it at dispatch, at the end of each leg,
 * when the hedge timer fires and when the cell flips, and request_act()
 * carries out what it says: send legs, arm or stop the hedge timer, cut the
 * losers (superseded), answer with a leg, the envelope or an error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "accesslog.h"
#include "budget.h"
#include "config.h"
#include "envelope.h"
#include "fanout.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "loop.h"
#include "request.h"
#include "util.h"

/* The gRPC status codes fanoutd gives (grpc/doc/statuscodes.md). */
enum {
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
	GRPC_UNAUTHENTICATED = 16,
};

static void	request_on_cancel(struct cancel *, enum cancel_reason, void *);
static void	request_end(struct request *, int, unsigned long long);
static int	request_decide(struct request *, enum fanout_what, size_t,
		    enum cancel_reason);
static void	request_supersede(struct request *);
static void	request_answer_leg(struct request *, struct leg *,
		    const char *, const char *);
static void	request_answer_envelope(struct request *, int, const char *);
static void	leg_start(struct leg *);
static void	leg_ended(struct leg *);
static void	stream_leg_ended(struct request *, struct leg *);
static size_t	leg_source_read(void *, char *, size_t, int *);
static void	log_no_socket(struct request *);
static struct evbuffer *request_headers_new(struct request *);
static void	 request_headers_done(struct request *, struct evbuffer *);

/* Taken off the budget each leg is told about, so that the next hop
 * gives up a little before we do and its answer can still reach us. */
#define DEADLINE_MARGIN_MS	5

static const char *const leg_outcome_metric[] = {
	[LEG_OK] = "ok",
	[LEG_STATUS] = "status",
	[LEG_FAILED] = "error",
	[LEG_CANCELLED] = "cancelled",
};

/* The one place request.state moves, and what moves with it. */
static void
request_set_state(struct request *r, enum request_state state)
{
	if (r->state == REQ_RUNNING)
		metrics_gauge_add(G_REQUESTS_IN_FLIGHT, -1);
	r->state = state;
	if (state == REQ_RUNNING)
		metrics_gauge_add(G_REQUESTS_IN_FLIGHT, 1);
}

/* What of the body is held (r->body exists once a byte has come). */
static size_t
request_body_len(const struct request *r)
{
	return (r->body != NULL ? evbuffer_get_length(r->body) : 0);
}

struct request *
request_new(struct loop *l, struct front *front, struct config *conf,
    const char *client, int tls, int h2)
{
	struct request	*r;

	if ((r = zalloc(1, sizeof *r)) == NULL)
		return (NULL);
	r->loop = l;
	r->front = front;
	r->conf = config_ref(conf);
	r->state = REQ_READING;
	r->grpc_status = -1;
	r->tls = tls;
	r->h2 = h2;
	r->http_minor = h2 ? 1 : 0;
	r->started_us = now_us();
	str_copy(r->client, sizeof r->client, client, strlen(client));
	str_copy(r->method, sizeof r->method, "-", 1);
	http_headers_init(&r->headers);
	cancel_init(&r->cancel, NULL, request_on_cancel, r);
	return (r);
}

static void
request_free(void *arg)
{
	struct request	*r = arg;
	size_t		 i;

	if (r->deadline_timer != NULL)	/* it is part of r */
		event_del(r->deadline_timer);
	for (i = 0; i < r->nlegs; i++) {
		http_headers_clear(&r->legs[i].headers);
		http_headers_clear(&r->legs[i].trailers);
		if (r->legs[i].body != NULL)
			evbuffer_free(r->legs[i].body);
	}
	if (r->legs != &r->leg_one)
		free(r->legs);
	http_headers_clear(&r->headers);
	if (r->body != NULL)
		evbuffer_free(r->body);
	free(r->target);
	config_unref(r->conf);
	free(r);
}

const char *
request_proto(const struct request *r)
{
	if (r->h2)
		return ("HTTP/2.0");
	return (r->http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1");
}

int
request_is_head(const struct request *r)
{
	return (strcmp(r->method, "HEAD") == 0);
}

static void
request_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	request_cancel(arg, CANCEL_DEADLINE);
}

/*
 * 1 if a path has a "." or ".." segment, spelt plainly or with %2e, and
 * with "/" spelt %2f or "\" as a separator too. Routes match the path as
 * written while an upstream may resolve those: "/public/../admin" would
 * pass a "/public/" route and be served as "/admin". Refused, not
 * rewritten, so that what is routed is what is sent.
 */
static int
path_has_dot_segment(const char *p, size_t len)
{
	size_t	i = 0, dots, other;

	while (i < len) {
		dots = other = 0;
		while (i < len) {
			if (p[i] == '/' || p[i] == '\\') {
				i++;
				break;
			}
			if (p[i] == '%' && i + 2 < len && p[i + 1] == '2' &&
			    (p[i + 2] == 'f' || p[i + 2] == 'F')) {
				i += 3;
				break;
			}
			if (p[i] == '.') {
				dots++;
				i++;
			} else if (p[i] == '%' && i + 2 < len && p[i + 1] == '2' &&
			    (p[i + 2] == 'e' || p[i + 2] == 'E')) {
				dots++;
				i += 3;
			} else {
				other++;
				i++;
			}
		}
		if (other == 0 && (dots == 1 || dots == 2))
			return (1);
	}
	return (0);
}

/*
 * Where the path starts in a request target: origin-form ("/a?b") as it is,
 * absolute-form ("http://h/a?b") by its path only, so that fanoutd is never
 * an open proxy. Anything else (authority-form, "*") is refused.
 */
static int
request_parse_target(struct request *r)
{
	const char	*t = r->target, *p;
	size_t		 len = r->targetlen, skip;

	if (t == NULL || len == 0)
		return (-1);
	if (t[0] == '/') {
		r->path = t;
		r->pathlen = len;
	} else {
		if (len > 7 && strncasecmp(t, "http://", 7) == 0)
			skip = 7;
		else if (len > 8 && strncasecmp(t, "https://", 8) == 0)
			skip = 8;
		else
			return (-1);
		p = memchr(t + skip, '/', len - skip);
		if (p == t + skip || skip == len)
			return (-1);	/* no host: "http:///x" */
		if (p == NULL) {
			if (memchr(t + skip, '?', len - skip) != NULL)
				return (-1);
			r->path = "/";
			r->pathlen = 1;
		} else {
			r->path = p;
			r->pathlen = len - (p - t);
		}
	}
	p = memchr(r->path, '?', r->pathlen);
	r->pathonly = p ? (size_t)(p - r->path) : r->pathlen;
	if (path_has_dot_segment(r->path, r->pathonly))
		return (-1);
	return (0);
}

/* The head has been read: request id, target, Host, route, method,
 * deadline. A problem is kept in r->reject for the dispatch to answer. */
static void
request_head_done(struct request *r)
{
	const struct http_header	*h;
	const struct route_conf		*rt;
	uint64_t			 deadline, client;
	unsigned			 bit, nhost;
	size_t				 i;

	if ((h = http_headers_get(&r->headers, "x-request-id")) != NULL &&
	    request_id_valid(h->value, h->valuelen))
		str_copy(r->id, sizeof r->id, h->value, h->valuelen);
	else
		request_id_new(r->id, sizeof r->id);

	if (request_parse_target(r) == -1) {
		r->reject = 400;
		r->reject_error = "bad_request_target";
		return;
	}
	/* RFC 9112 3.2: one valid Host, and a 1.1 request must have it. */
	for (i = 0, nhost = 0; i < r->headers.n; i++) {
		h = &r->headers.v[i];
		if (!strn_eq_ci(h->name, h->namelen, "host"))
			continue;
		if (++nhost > 1 || !http_host_valid(h->value, h->valuelen)) {
			r->reject = 400;
			r->reject_error = "bad_host";
			return;
		}
	}
	if (!r->h2 && r->http_minor >= 1 && nhost == 0) {
		r->reject = 400;
		r->reject_error = "missing_host";
		return;
	}
	if ((rt = config_find_route(r->conf, r->path, r->pathonly)) == NULL) {
		r->reject = 404;
		r->reject_error = "no_route";
		return;
	}
	r->route = rt;
	bit = config_method_bit(r->method, strlen(r->method));
	if (rt->methods != 0 && (bit & rt->methods) == 0) {
		r->reject = 405;
		r->reject_error = "method_not_allowed";
		return;
	}

	/* The deadline runs from the end of the head; a client's own
	 * X-Request-Deadline-Ms may shorten it, never lengthen it. */
	deadline = rt->deadline_ms;
	if (http_client_deadline(&r->headers, &client) && client < deadline)
		deadline = client;
	r->deadline_ms = now_ms() + deadline;
	r->deadline_timer = &r->deadline_ev;
	evtimer_assign(r->deadline_timer, r->loop->base, request_deadline_cb, r);
	evtimer_add_ms(r->deadline_timer, deadline);
}

int
request_set_method(struct request *r, const char *m, size_t len)
{
	if (len >= sizeof r->method) {
		request_refuse(r, 501, "method");
		return (-1);
	}
	str_copy(r->method, sizeof r->method, m, len);
	return (0);
}

int
request_add_target(struct request *r, const char *p, size_t len)
{
	char	*nt;

	if ((nt = realloc(r->target, r->targetlen + len + 1)) == NULL)
		return (-1);
	memcpy(nt + r->targetlen, p, len);
	r->targetlen += len;
	nt[r->targetlen] = '\0';
	r->target = nt;
	return (0);
}

int
request_add_header(struct request *r, const char *name, size_t namelen,
    const char *value, size_t valuelen)
{
	return (http_headers_add(&r->headers, name, namelen, value, valuelen));
}

void
request_refuse(struct request *r, int status, const char *error)
{
	if (r->reject != 0)
		return;
	r->reject = status;
	r->reject_error = error;
}

int
request_refusal(const struct request *r, const char **error)
{
	if (error != NULL)
		*error = r->reject_error;
	return (r->reject);
}

/*
 * The 413 on a declared length and whether the body streams are decided
 * here, for both front ends. The 413 stands over any other refusal: the
 * body is not going to be read for it.
 */
enum request_body
request_head_end(struct request *r, int http_minor, int has_body,
    int *expect)
{
	const struct http_header	*cl, *ex;
	uint64_t			 length = 0;
	int				 declared = 0;

	r->http_minor = http_minor;
	r->has_body = has_body;
	*expect = 0;
	request_head_done(r);
	/* HTTP/2 takes trailers always; HTTP/1.1 when the client says so. */
	r->trailers_ok = r->h2 || http_te_trailers(&r->headers);
	if ((ex = http_headers_get(&r->headers, "content-type")) != NULL &&
	    http_is_grpc_type(ex->value, ex->valuelen)) {
		r->grpc = 1;
		/* One answer, a stream of messages: no envelope for those. */
		if (r->route != NULL && (r->route->mode == MODE_ALL ||
		    r->route->mode == MODE_QUORUM))
			request_refuse(r, 501, "mode_not_for_grpc");
	}
	if (!has_body)
		return (REQUEST_BODY_NONE);
	if ((cl = http_headers_get(&r->headers, "content-length")) != NULL &&
	    parse_u64(cl->value, cl->valuelen, UINT64_MAX, &length) == 0)
		declared = 1;
	/*
	 * A gRPC call's request stream in mode proxy goes through message by
	 * message, held back by flow control, for as long as the call lasts
	 * (client and bidirectional streaming): the size of the whole stream
	 * bounds nothing fanoutd holds. The modes that keep the body for
	 * every leg still bound it.
	 */
	r->body_unbounded = r->grpc && r->reject == 0 && r->route != NULL &&
	    r->route->mode == MODE_PROXY;
	if (declared && length > r->conf->max_body_size && !r->body_unbounded) {
		r->reject = 413;
		r->reject_error = "body_too_large";
		return (REQUEST_BODY_REFUSED);
	}
	*expect = !r->h2 && http_minor >= 1 && r->reject == 0 &&
	    (ex = http_headers_get(&r->headers, "expect")) != NULL &&
	    strn_eq_ci(ex->value, ex->valuelen, "100-continue");
	if (declared && length == 0)
		return (REQUEST_BODY_NONE);
	/* Mode proxy sends the body on as it arrives; the others need it
	 * whole, every leg sending the same bytes. */
	if (r->reject == 0 && r->route != NULL &&
	    r->route->mode == MODE_PROXY) {
		r->streams_body = 1;
		r->source.size = declared && length <= INT64_MAX ?
		    (long long)length : -1;
		return (REQUEST_BODY_STREAM);
	}
	return (REQUEST_BODY_COLLECT);
}

int
request_dispatched(const struct request *r)
{
	return (r->state != REQ_READING);
}

int
request_is_done(const struct request *r)
{
	return (r->state == REQ_DONE);
}

/*
 * Legs a request of the route may need: one per upstream; in mode proxy
 * one per server (a connect failure moves on to the next), within reason.
 */
#define PROXY_ATTEMPTS_MAX	16

static size_t
request_legs_needed(const struct route_conf *rt)
{
	size_t	i, n = 0;

	if (rt->mode != MODE_PROXY)
		return (rt->nupstreams);
	for (i = 0; i < rt->nupstreams; i++)
		n += rt->upstreams[i]->nservers;
	if (n > PROXY_ATTEMPTS_MAX)
		n = PROXY_ATTEMPTS_MAX;
	return (n < rt->nupstreams ? rt->nupstreams : n);
}

/* Idempotent (RFC 9110, 9.2.2), or made so by an Idempotency-Key. */
static int
request_safe_to_repeat(const struct request *r)
{
	const unsigned	idempotent = HTTP_M_GET | HTTP_M_HEAD |
	    HTTP_M_OPTIONS | HTTP_M_PUT | HTTP_M_DELETE | HTTP_M_TRACE;

	if (config_method_bit(r->method, strlen(r->method)) & idempotent)
		return (1);
	return (http_headers_get(&r->headers, "idempotency-key") != NULL);
}

void
request_dispatch(struct request *r)
{
	size_t	i;

	if (r->reject != 0) {
		request_error(r, r->reject, r->reject_error);
		return;
	}
	r->body_streaming = r->streams_body && !r->body_ended;
	request_set_state(r, REQ_RUNNING);
	if (r->deadline_ms <= now_ms()) {
		request_cancel(r, CANCEL_DEADLINE);
		return;
	}
	r->source.read = leg_source_read;
	r->nlegs = request_legs_needed(r->route);
	/* A gRPC call is repeated only where the route says so, as gRPC's
	 * own hedging is opt-in per method. */
	r->once = !r->route->repeat_unsafe &&
	    (r->grpc || !request_safe_to_repeat(r));
	if (budget_applies(r->route))
		budget_request(r->route);
	/* One leg (mode proxy, or a request sent once) lives in r. */
	if (r->nlegs == 1)
		r->legs = &r->leg_one;
	else if ((r->legs = zalloc(r->nlegs, sizeof *r->legs)) == NULL) {
		r->nlegs = 0;
		request_error(r, 503, "out_of_memory");
		return;
	}
	for (i = 0; i < r->nlegs; i++) {
		r->legs[i].req = r;
		http_headers_init(&r->legs[i].headers);
		http_headers_init(&r->legs[i].trailers);
		/* Proxy picks its upstream per attempt; the others map
		 * leg i to upstream i. */
		if (r->route->mode != MODE_PROXY)
			r->legs[i].up = r->route->upstreams[i];
	}
	request_decide(r, FANOUT_START, 0, CANCEL_NONE);
}

void
request_cancel(struct request *r, enum cancel_reason reason)
{
	if (r->state == REQ_DONE)
		return;
	r->flip_us = now_us();
	cancel_flip(&r->cancel, reason);
}

void
request_conn_gone(struct request *r, enum cancel_reason why)
{
	r->front = NULL;
	if (r->state == REQ_READING) {
		/* Not dispatched: no work to stop, nothing to log. */
		request_set_state(r, REQ_DONE);
		if (r->deadline_timer != NULL)
			event_del(r->deadline_timer);
		r->deadline_timer = NULL;
		cancel_detach(&r->cancel);
		loop_defer_free(r->loop, &r->grave, request_free, r);
		return;
	}
	request_cancel(r, why);
}

static void
request_on_cancel(struct cancel *c, enum cancel_reason reason, void *arg)
{
	struct request	*r = arg;

	/* Every leg has been released by now: children flip first. */
	if (r->legs_cancelled > 0)
		metrics_cancellation(reason, now_us() - r->flip_us);
	if (r->state == REQ_DONE)
		return;
	/* The mode may answer (mode all, partial = allow, at the deadline);
	 * there must be a client to answer for that. */
	if (r->front != NULL && request_decide(r, FANOUT_CANCELLED, 0, reason))
		return;
	switch (reason) {
	case CANCEL_CLIENT_CLOSED:
		r->grpc_status = GRPC_CANCELLED;	/* the client's own */
		request_end(r, 499, 0);
		break;
	case CANCEL_DEADLINE:
		request_error(r, 504, "deadline");
		break;
	case CANCEL_SHUTDOWN:
		request_error(r, 503, "shutdown");
		break;
	default:
		request_error(r, 500, "cancelled");
		break;
	}
}

/* Common headers of every answer. */
static struct evbuffer *
request_headers_new(struct request *r)
{
	struct evbuffer	*h;

	if (r->loop != NULL && r->loop->head != NULL && !r->loop->head_busy) {
		h = r->loop->head;
		r->loop->head_busy = 1;
	} else if ((h = evbuffer_new()) == NULL)
		return (NULL);
	if (r->id[0] != '\0')
		evbuffer_add_field(h, "X-Request-Id", 12, r->id, strlen(r->id));
	else
		evbuffer_add(h, "X-Request-Id: -\r\n", 17);
	return (h);
}

/* Give back what request_headers_new lent (the front end took its bytes). */
static void
request_headers_done(struct request *r, struct evbuffer *h)
{
	if (h == NULL)
		return;
	if (r->loop != NULL && h == r->loop->head) {
		evbuffer_drain(h, evbuffer_get_length(h));
		r->loop->head_busy = 0;
	} else
		evbuffer_free(h);
}

/* ---- gRPC (fanoutd(8), GRPC) ------------------------------------------- */

/*
 * A gRPC call is answered the gRPC way: with HTTP 200 and its status in
 * grpc-status (and grpc-message), in trailers after the messages, or as a
 * trailers-only answer (one HEADERS frame) when there are none. So are the
 * errors fanoutd makes itself, and an upstream's answer that is not gRPC.
 */

/* A grpc-message value: percent-encoded where not printable ASCII. */
static void
grpc_fields(struct evbuffer *b, int code, const char *message)
{
	const unsigned char	*p;

	evbuffer_add(b, "grpc-status: ", 13);
	evbuffer_add_u64(b, (uint64_t)code);
	evbuffer_add(b, "\r\ngrpc-message: ", 16);
	for (p = (const unsigned char *)message; *p != '\0'; p++) {
		if (*p < 0x20 || *p > 0x7e || *p == '%')
			evbuffer_add_printf(b, "%%%02X", *p);
		else
			evbuffer_add(b, p, 1);
	}
	evbuffer_add(b, "\r\n", 2);
}

/* An upstream's HTTP status where a gRPC answer was due: gRPC's own
 * table ("HTTP to gRPC Status Code Mapping"). */
static int
grpc_from_http(int status)
{
	switch (status) {
	case 400:
		return (GRPC_INTERNAL);
	case 401:
		return (GRPC_UNAUTHENTICATED);
	case 403:
		return (GRPC_PERMISSION_DENIED);
	case 404:
		return (GRPC_UNIMPLEMENTED);
	case 429:
	case 502:
	case 503:
	case 504:
		return (GRPC_UNAVAILABLE);
	default:
		return (GRPC_UNKNOWN);
	}
}

/* One of fanoutd's own errors on a gRPC call. */
static int
grpc_from_error(int status, const char *error)
{
	if (strcmp(error, "deadline") == 0 || status == 408)
		return (GRPC_DEADLINE_EXCEEDED);
	if (status == 404 || status == 405 || status == 501)
		return (GRPC_UNIMPLEMENTED);
	if (status == 413)
		return (GRPC_RESOURCE_EXHAUSTED);
	if (status >= 500)
		return (GRPC_UNAVAILABLE);
	return (GRPC_INTERNAL);		/* the request was malformed */
}

/* The grpc-status a leg's answer carries (trailers, or trailers-only). */
static int
leg_grpc_status(const struct leg *l)
{
	const struct http_header	*h;
	uint64_t			 v;

	if (((h = http_headers_get(&l->trailers, "grpc-status")) != NULL ||
	    (h = http_headers_get(&l->headers, "grpc-status")) != NULL) &&
	    parse_u64(h->value, h->valuelen, 255, &v) == 0)
		return ((int)v);
	return (-1);
}

/* An answer a gRPC client can take as it is. */
static int
grpc_answer_ok(int status, const struct http_headers *hs)
{
	const struct http_header	*ct;

	return (status == 200 &&
	    (ct = http_headers_get(hs, "content-type")) != NULL &&
	    http_is_grpc_type(ct->value, ct->valuelen));
}

/*
 * fanoutd's error on a gRPC call: trailers-only, or, once the upstream's
 * head is out, trailers after what it sent (never a cut stream: the
 * client learns why).
 */
static void
request_grpc_error(struct request *r, int status, const char *error)
{
	struct evbuffer		*b;
	unsigned long long	 bytes = 0;
	char			 msg[96];
	int			 code = grpc_from_error(status, error);

	snprintf(msg, sizeof msg, "fanoutd: %s", error);
	r->grpc_status = code;
	if (r->id[0] == '\0')
		request_id_new(r->id, sizeof r->id);
	if (r->front != NULL && r->streaming) {
		r->streaming = 0;
		if ((b = evbuffer_new()) != NULL)
			grpc_fields(b, code, msg);
		bytes = front_stream_end(r->front, b);
		if (b != NULL)
			evbuffer_free(b);
		r->front = NULL;
		request_end(r, 200, bytes);
		return;
	}
	if (r->front != NULL && (b = request_headers_new(r)) != NULL) {
		evbuffer_add(b, "Content-Type: application/grpc\r\n", 32);
		grpc_fields(b, code, msg);
		bytes = front_respond(r->front, 200, b, NULL, -2, NULL,
		    status == 503 || status == 400 ? FRONT_CLOSE : FRONT_KEEP);
		request_headers_done(r, b);
	}
	request_end(r, 200, bytes);
}

/*
 * The trailers of a leg's answer for the client, or NULL: none, or the
 * client cannot take them (HTTP/1.x without TE: trailers), or a HEAD.
 */
static struct evbuffer *
leg_trailers(struct request *r, const struct leg *l)
{
	const struct http_header	*h;
	struct evbuffer			*out;
	size_t				 i;

	if (l->trailers.n == 0 || request_is_head(r))
		return (NULL);
	if (!r->trailers_ok) {
		if (r->grpc)
			log_info("trailers not sent: the client did not send "
			    "TE: trailers request_id=%s", r->id);
		return (NULL);
	}
	if ((out = evbuffer_new()) == NULL)
		return (NULL);
	for (i = 0; i < l->trailers.n; i++) {
		h = &l->trailers.v[i];
		if (http_response_header_passes(&l->trailers, h->name,
		    h->namelen))
			evbuffer_add_field(out, h->name, h->namelen, h->value,
			    h->valuelen);
	}
	return (out);
}

void
request_error(struct request *r, int status, const char *error)
{
	struct evbuffer		*h = NULL, *body = NULL;
	unsigned long long	 bytes = 0;
	size_t			 cut;
	enum front_after	 how;

	if (r->state == REQ_DONE)
		return;
	if (r->grpc) {
		request_grpc_error(r, status, error);
		return;
	}
	if (r->streaming) {
		r->streaming = 0;
		/* A head is out already: the only honest end is a cut. */
		if (r->front != NULL && front_stream_abort(r->front, &cut) == -1) {
			r->front = NULL;
			request_end(r, status, cut);
			return;
		}
	}
	if (r->id[0] == '\0')
		request_id_new(r->id, sizeof r->id);
	if (r->front != NULL && (h = request_headers_new(r)) != NULL &&
	    (body = evbuffer_new()) != NULL) {
		evbuffer_add(h, "Content-Type: application/json\r\n", 32);
		evbuffer_add_printf(body, "{\"error\":\"%s\",\"request_id\":",
		    error);
		json_append_string(body, r->id, strlen(r->id));
		evbuffer_add(body, "}\n", 2);
		/* A request not read to its end is closed with a linger by
		 * the front end itself (h1_reject, h1_head). */
		how = status == 503 || status == 400 ? FRONT_CLOSE : FRONT_KEEP;
		bytes = front_respond(r->front, status, h,
		    request_is_head(r) ? NULL : body,
		    (long long)evbuffer_get_length(body), NULL, how);
	}
	request_headers_done(r, h);
	if (body != NULL)
		evbuffer_free(body);
	request_end(r, status, bytes);
}

/*
 * The one way out: log, count, cut every link, free after this callback.
 * A leg still running here is an answered request's leftover: it is aborted
 * without being counted as a cancellation.
 */
static void
request_end(struct request *r, int status, unsigned long long bytes)
{
	struct accesslog_entry	 e;
	size_t			 i;

	if (r->state == REQ_DONE)
		return;
	request_set_state(r, REQ_DONE);
	/*
	 * Answered while legs still run (an error found in a body that was
	 * still arriving): the answer is decided, so they are superseded,
	 * through the same leg-ended path as any other end of a leg (which
	 * goes no further, the request being done).
	 */
	if (r->legs_running > 0)
		request_supersede(r);
	for (i = 0; i < r->nlegs; i++)
		cancel_detach(&r->legs[i].cancel);
	/* Ended without an answer written (out of memory): drop the client
	 * rather than leave it pointing at a freed request. */
	if (r->front != NULL)
		front_abandon(r->front, r);
	cancel_detach(&r->cancel);
	if (r->deadline_timer != NULL)
		event_del(r->deadline_timer);
	r->deadline_timer = NULL;
	if (r->hedge_timer != NULL)
		event_free(r->hedge_timer);
	r->hedge_timer = NULL;
	r->front = NULL;

	e.request_id = r->id;
	e.client = r->client;
	e.method = r->method;
	e.target = r->target;
	e.targetlen = r->targetlen;
	e.proto = request_proto(r);
	e.tls = r->tls;
	e.route = r->route ? r->route->name : NULL;
	e.status = status;
	e.bytes = bytes;
	e.started_us = r->started_us;
	e.cancel_reason = cancel_is_set(&r->cancel) ?
	    cancel_reason_name(cancel_reason_of(&r->cancel)) : NULL;
	e.legs = r->legs;
	e.nlegs = r->nlegs;
	e.grpc_status = -1;
	if (r->grpc) {
		/* An answer that said nothing is UNKNOWN to a gRPC client. */
		if (r->grpc_status < 0)
			r->grpc_status = GRPC_UNKNOWN;
		e.grpc_status = r->grpc_status;
		metrics_grpc_request(r->route ? r->route->name : "",
		    r->grpc_status);
	}
	accesslog_write(&e);
	metrics_request_done(r->route ? r->route->name : "", status,
	    now_us() - r->started_us);
	metrics_request_proto(r->h2 ? 2 : r->http_minor);
	log_debug("request done request_id=%s status=%d", r->id, status);
	loop_defer_free(r->loop, &r->grave, request_free, r);
}

/* ---- legs --------------------------------------------------------------- */

static void
leg_on_cancel(struct cancel *c, enum cancel_reason reason, void *arg)
{
	struct leg	*l = arg;
	struct request	*r = l->req;
	size_t		 bytes;

	if (l->state != LEG_RUNNING) {
		/* Never sent: nothing to stop, nothing to count. */
		return;
	}
	bytes = transfer_abort(l->xfer);
	metrics_counter_add(C_UPSTREAM_BYTES_DISCARDED, bytes);
	/* The ledger: what the upstream spent on an answer nobody took. */
	l->wasted_us = now_us() - l->started_us;
	metrics_wasted(l->up->name, reason, l->wasted_us, bytes);
	l->xfer = NULL;
	l->outcome = LEG_CANCELLED;
	r->legs_cancelled++;
	metrics_upstream_done(l->up->name, "cancelled");
	leg_ended(l);
}

static void
leg_transfer_done(struct transfer *x, struct transfer_result *res, void *arg)
{
	struct leg	*l = arg;

	l->xfer = NULL;
	l->status = res->status;
	l->detail = res->detail;
	if (res->error == XFER_OK) {
		l->outcome = (res->status >= 200 && res->status < 300) ?
		    LEG_OK : LEG_STATUS;
		/* Take the response: swap the header lists, move the body. */
		l->headers = *res->headers;
		http_headers_init(res->headers);
		l->trailers = *res->trailers;
		http_headers_init(res->trailers);
		/* The body too: taken whole when the leg has none yet. */
		if (res->body != NULL && l->body == NULL) {
			l->body = res->body;
			res->body = NULL;
		} else if (res->body != NULL)
			evbuffer_add_buffer(l->body, res->body);
		metrics_upstream_done(l->up->name, leg_outcome_metric[l->outcome]);
		l->verdict = res->status >= 500 ? HEALTH_FAIL : HEALTH_PASS;
	} else {
		l->outcome = LEG_FAILED;
		l->error = res->error;
		/* Too large is the answer's fault, no socket ours. */
		if (res->error != XFER_TOO_LARGE && res->error != XFER_NO_SOCKET)
			l->verdict = HEALTH_FAIL;
		metrics_upstream_done(l->up->name,
		    res->error == XFER_TIMEOUT ? "timeout" : "error");
		if (res->error == XFER_NO_SOCKET)
			log_no_socket(l->req);
		log_info("upstream failed request_id=%s upstream=%s error=%s "
		    "detail=\"%s\"", l->req->id, l->up->name,
		    transfer_error_name(res->error), res->detail);
	}
	leg_ended(l);
}

/* Out of descriptors: loud, but not once per request. */
static void
log_no_socket(struct request *r)
{
	static uint64_t	last;	/* atomic */
	uint64_t	now = now_ms(), prev;

	prev = __atomic_load_n(&last, __ATOMIC_RELAXED);
	if (now - prev < 1000 || !__atomic_compare_exchange_n(&last, &prev, now,
	    0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		return;
	log_warnx("out of file descriptors for upstream connections, "
	    "answering 503 request_id=%s (raise LimitNOFILE or lower "
	    "max_connections)", r->id);
}

/* Every end of a leg comes through here, whatever ended it. */
static void
leg_ended(struct leg *l)
{
	struct request	*r = l->req;

	l->state = LEG_DONE;
	l->duration_us = now_us() - l->started_us;
	r->legs_running--;
	health_leg_end(l->up, l->server, l->verdict);
	if (cancel_is_set(&r->cancel) || r->state != REQ_RUNNING)
		return;		/* the request's own flip answers */
	if (r->streaming) {
		stream_leg_ended(r, l);
		return;
	}
	if (r->decided)
		return;		/* already being answered */
	if (r->starting)
		return;		/* reported once the action's legs are out */
	request_decide(r, FANOUT_LEG_ENDED, (size_t)(l - r->legs), CANCEL_NONE);
}

/* ---- streamed request bodies (mode proxy) ---------------------------------- */

/* Inside curl's read callback: hand over what arrived, touch no curl. */
static size_t
leg_source_read(void *arg, char *buf, size_t len, int *eof)
{
	struct leg	*l = arg;
	struct request	*r = l->req;
	int		 n = 0;

	if (r->body != NULL && (n = evbuffer_remove(r->body, buf, len)) < 0)
		n = 0;
	if (n == 0 && !r->body_streaming)
		*eof = 1;
	if (r->front != NULL && request_body_len(r) < FRONT_STREAM_LOW)
		front_body_resume(r->front);
	return ((size_t)n);
}

int
request_body_add(struct request *r, const void *data, size_t len)
{
	r->body_bytes += len;
	if (r->body_bytes > r->conf->max_body_size && !r->body_unbounded) {
		r->reject = 413;
		r->reject_error = "body_too_large";
		return (-1);
	}
	/* Made for the first byte: most requests have no body. */
	if (r->body == NULL && (r->body = evbuffer_new()) == NULL)
		return (-2);
	return (evbuffer_add(r->body, data, len) == -1 ? -2 : 0);
}

/* Let every running leg's transfer read what came. */
static void
legs_resume_send(struct request *r)
{
	size_t	i;

	for (i = 0; i < r->nlegs; i++) {
		if (r->legs[i].state == LEG_RUNNING && r->legs[i].xfer != NULL)
			transfer_resume_send(r->legs[i].xfer);
	}
}

void
request_body_more(struct request *r)
{
	if (r->body_streaming && r->state == REQ_RUNNING)
		legs_resume_send(r);
}

void
request_body_end(struct request *r)
{
	if (r->body_ended)
		return;
	r->body_ended = 1;
	if (!r->body_streaming)
		return;
	r->body_streaming = 0;
	if (r->state == REQ_RUNNING)
		legs_resume_send(r);	/* curl must see the end, paused or not */
}

int
request_body_full(const struct request *r)
{
	return (r->body_streaming && request_body_len(r) > FRONT_STREAM_HIGH);
}

/* ---- streamed answers (mode proxy) ---------------------------------------- */

/* The response headers a client sees from an upstream's. */
static struct evbuffer *
leg_response_headers(struct request *r, const struct http_headers *hs)
{
	const struct http_header	*h;
	struct evbuffer			*out;
	size_t				 i;

	if ((out = request_headers_new(r)) == NULL)
		return (NULL);
	for (i = 0; i < hs->n; i++) {
		h = &hs->v[i];
		if (!http_response_header_passes(hs, h->name, h->namelen) ||
		    strn_eq_ci(h->name, h->namelen, "transfer-encoding"))
			continue;
		evbuffer_add_field(out, h->name, h->namelen, h->value,
		    h->valuelen);
	}
	return (out);
}

static void
leg_stream_resume(void *arg)
{
	struct leg	*l = arg;

	if (l->xfer != NULL)
		transfer_resume(l->xfer);
}

/* Inside curl's header callback: queue the head, touch nothing of curl. */
static void
leg_stream_head(void *arg, int status, const struct http_headers *hs,
    long long content_length)
{
	struct leg	*l = arg;
	struct request	*r = l->req;
	struct evbuffer	*hdrs;

	if (r->front == NULL || r->state != REQ_RUNNING || r->decided)
		return;		/* answered at the end, from the collected body */
	/* Not a gRPC answer to a gRPC call: made one at the end. */
	if (r->grpc && !grpc_answer_ok(status, hs))
		return;
	if ((hdrs = leg_response_headers(r, hs)) == NULL)
		return;
	/* gRPC's messages carry their own lengths; with none an HTTP/1.1
	 * answer is chunked, so that the trailers can follow. */
	if (r->grpc)
		content_length = -1;
	r->decided = 1;
	r->streaming = 1;
	l->status = status;
	front_stream_begin(r->front, status, hdrs, content_length,
	    request_is_head(r), leg_stream_resume, l);
	request_headers_done(r, hdrs);
}

/* Inside curl's write callback: 1 asks curl to pause. */
static int
leg_stream_data(void *arg, const char *data, size_t len)
{
	struct leg	*l = arg;
	struct request	*r = l->req;

	if (!r->streaming) {
		/* No head went out (it could not be queued, or it is made at
		 * the end): collect, within max_response_size. */
		if (l->body == NULL && (l->body = evbuffer_new()) == NULL)
			return (-1);
		if (evbuffer_get_length(l->body) + len > l->up->max_response_size)
			return (-1);
		evbuffer_add(l->body, data, len);
		return (0);
	}
	if (r->front == NULL)
		return (0);
	if (front_stream_full(r->front))
		return (1);
	front_stream_data(r->front, data, len);
	return (0);
}

static const struct transfer_stream leg_stream = {
	leg_stream_head, leg_stream_data
};

static void
stream_leg_ended(struct request *r, struct leg *l)
{
	unsigned long long	 bytes = 0;
	struct evbuffer		*trailers;

	if (l->outcome == LEG_OK || l->outcome == LEG_STATUS) {
		r->grpc_status = leg_grpc_status(l);
		trailers = leg_trailers(r, l);
		if (r->front != NULL)
			bytes = front_stream_end(r->front, trailers);
		if (trailers != NULL)
			evbuffer_free(trailers);
		r->front = NULL;
		request_end(r, l->status, bytes);
		return;
	}
	/* Failed mid-body: request_error takes the head back if it can, and
	 * cuts the connection if it cannot. */
	request_error(r, l->error == XFER_TIMEOUT ? 504 : 502,
	    l->error == XFER_TIMEOUT ? "upstream_timeout" : "upstream_failed");
}

/* A leg that ends as it starts, without a transfer: outcome says how in
 * fanoutd_upstream_requests_total. */
static void
leg_failed_now(struct leg *l, enum transfer_error error, const char *detail,
    const char *outcome)
{
	l->outcome = LEG_FAILED;
	l->error = error;
	l->detail = detail;
	metrics_upstream_done(l->up->name, outcome);
	leg_ended(l);
}

static void
leg_start(struct leg *l)
{
	struct request		*r = l->req;
	const struct route_conf	*rt = r->route;
	struct transfer_request	 tr;
	struct http_headers	 out;
	struct forward_info	 fi;
	uint64_t		 now = now_ms();
	const char		*path = r->path;
	size_t			 pathlen = r->pathlen;
	char			*stripped = NULL;
	struct server_conf	*tried[PROXY_ATTEMPTS_MAX];
	size_t			 i, ntried = 0;

	cancel_init(&l->cancel, &r->cancel, leg_on_cancel, l);
	l->started_us = now_us();
	l->state = LEG_RUNNING;
	r->legs_running++;
	/* The server: not one this request tried already (mode proxy's
	 * attempts after a connect failure). */
	for (i = 0; i < r->nlegs && ntried < PROXY_ATTEMPTS_MAX; i++)
		if (r->legs[i].up == l->up && r->legs[i].server != NULL)
			tried[ntried++] = r->legs[i].server;
	if ((l->server = health_pick(l->up, tried, ntried)) == NULL) {
		log_debug("no available server request_id=%s upstream=%s",
		    r->id, l->up->name);
		leg_failed_now(l, XFER_UNAVAILABLE, "no available server",
		    "unavailable");
		return;
	}

	fi.client_addr = r->client;
	fi.proto = r->tls ? "https" : "http";
	fi.request_id = r->id;
	fi.trailers = r->trailers_ok;
	fi.grpc = r->grpc;
	fi.deadline_left_ms = r->deadline_ms > now + DEADLINE_MARGIN_MS ?
	    r->deadline_ms - now - DEADLINE_MARGIN_MS : 1;
	http_headers_init(&out);
	if (http_forward_request_headers(&r->headers, &fi, &out) == -1) {
		http_headers_clear(&out);
		goto fail;
	}

	if (rt->strip_prefix) {
		size_t	m = strlen(rt->match);

		if (m > r->pathonly)
			m = r->pathonly;
		if (m > 0 && rt->match[m - 1] == '/')
			m--;	/* keep the slash that starts the rest */
		path += m;
		pathlen -= m;
		if (pathlen == 0 || path[0] != '/') {
			if (asprintf(&stripped, "/%.*s", (int)pathlen, path) == -1) {
				http_headers_clear(&out);
				goto fail;
			}
			path = stripped;
			pathlen++;
		}
	}

	/* The body was read once; every leg sends the same bytes. */
	memset(&tr, 0, sizeof tr);
	tr.up = l->up;
	tr.url = l->server->url;
	tr.method = r->method;
	tr.path = path;
	tr.pathlen = pathlen;
	tr.headers = &out;
	tr.has_body = r->has_body;
	tr.bodylen = request_body_len(r);
	if (r->body_streaming) {
		tr.source = &r->source;
		tr.bodylen = 0;
	}
	tr.body = tr.bodylen ? evbuffer_pullup(r->body, -1) : NULL;
	if (rt->mode == MODE_PROXY) {
		tr.stream = &leg_stream;
		/* A gRPC stream's messages go through as they come, held back
		 * by flow control, for as long as the call lasts: the size of
		 * a whole answer bounds nothing fanoutd holds. */
		tr.any_size = r->grpc;
	}
	l->xfer = transfer_start(r->loop->upstreams, &tr, leg_transfer_done, l);
	http_headers_clear(&out);
	free(stripped);
	if (l->xfer == NULL)
		goto fail;
	log_debug("leg started request_id=%s upstream=%s server=%s", r->id,
	    l->up->name, l->server->url);
	return;
fail:
	log_warnx("cannot start upstream request request_id=%s upstream=%s",
	    r->id, l->up->name);
	leg_failed_now(l, XFER_PROTOCOL, "cannot start the transfer", "error");
}

/* Decide: cut every leg still in flight with reason superseded. */
static void
request_supersede(struct request *r)
{
	uint64_t	t0 = now_us();
	unsigned	before = r->legs_cancelled;
	size_t		i;

	r->decided = 1;
	for (i = 0; i < r->nlegs; i++) {
		if (r->legs[i].state == LEG_RUNNING)
			cancel_flip(&r->legs[i].cancel, CANCEL_SUPERSEDED);
	}
	if (r->legs_cancelled > before)
		metrics_cancellation(CANCEL_SUPERSEDED, now_us() - t0);
}

/* ---- the mode's decisions ----------------------------------------------- */

/* Still waiting for the request's answer? Legs may end synchronously
 * (a transfer that cannot start), deciding before a loop is over. */
static int
undecided(const struct request *r)
{
	return (r->state == REQ_RUNNING && !r->decided &&
	    !cancel_is_set(&r->cancel));
}

static void
request_hedge_cb(evutil_socket_t fd, short what, void *arg)
{
	struct request	*r = arg;

	if (undecided(r))
		request_decide(r, FANOUT_HEDGE_TIMER, 0, CANCEL_NONE);
}

/*
 * Carry out a mode's action, in the order fanout.h gives. Legs sent here
 * that end at once (their transfer could not start) are held until the
 * last of them is out, then reported to the mode one by one, in order,
 * while it has not decided: a mode never decides halfway through sending.
 * 1 if the action answered.
 */
static int
request_act(struct request *r, struct fanout_action *a)
{
	size_t		i, end;

	switch (a->timer) {
	case FANOUT_TIMER_KEEP:
		break;
	case FANOUT_TIMER_ARM:
		if (r->hedge_timer == NULL && (r->hedge_timer =
		    evtimer_new(r->loop->base, request_hedge_cb, r)) == NULL) {
			fanout_action_clear(a);
			request_error(r, 503, "out_of_memory");
			return (1);
		}
		evtimer_add_ms(r->hedge_timer, a->timer_ms);
		break;
	case FANOUT_TIMER_DISARM:
		if (r->hedge_timer != NULL)
			evtimer_del(r->hedge_timer);
		break;
	}
	if (a->hedges_sent > 0)
		metrics_counter_add(C_HEDGES_SENT, a->hedges_sent);
	if (a->hedges_won > 0) {
		metrics_counter_add(C_HEDGES_WON, a->hedges_won);
		metrics_extra_attempt(r->route->name, "hedge", "won",
		    a->hedges_won);
	}
	if (a->retries_won > 0)
		metrics_extra_attempt(r->route->name, "retry", "won",
		    a->retries_won);
	if (a->unsafe_skipped > 0)
		metrics_extra_attempt(r->route->name, "hedge", "skipped_unsafe",
		    a->unsafe_skipped);
	if (a->supersede)
		request_supersede(r);
	if (a->nstart > 0) {
		end = a->start + a->nstart;
		r->starting = 1;
		for (i = a->start; i < end; i++) {
			if (a->up != NULL)
				r->legs[i].up = a->up;
			leg_start(&r->legs[i]);
		}
		r->starting = 0;
		for (i = a->start; i < end && undecided(r); i++) {
			if (r->legs[i].state == LEG_DONE)
				request_decide(r, FANOUT_LEG_ENDED, i,
				    CANCEL_NONE);
		}
		fanout_action_clear(a);
		return (0);
	}
	switch (a->answer) {
	case FANOUT_WAIT:
		return (0);
	case FANOUT_LEG:
		request_answer_leg(r, &r->legs[a->leg], a->header_name,
		    a->header_value);
		break;
	case FANOUT_ENVELOPE:
		request_answer_envelope(r, a->status, a->partial);
		break;
	case FANOUT_ERROR:
		request_error(r, a->status, a->error);
		break;
	}
	fanout_action_clear(a);
	return (1);
}

/* The mode asks whether an extra attempt may go: the route's budget. */
static int
request_extra_ok(void *arg, enum fanout_extra kind)
{
	struct request	*r = arg;

	return (budget_take(r->route, kind == FANOUT_EXTRA_HEDGE ?
	    BUDGET_HEDGE : BUDGET_RETRY));
}

/* Ask the route's mode what to do after what, and do it. 1 if answered. */
static int
request_decide(struct request *r, enum fanout_what what, size_t leg,
    enum cancel_reason reason)
{
	struct fanout_event	ev;
	struct fanout_action	a;

	ev.what = what;
	ev.leg = leg;
	ev.reason = reason;
	ev.once = r->once;
	ev.extra = request_extra_ok;
	ev.extra_arg = r;
	fanout_decide(r->route, r->legs, r->nlegs, &ev, &a);
	return (request_act(r, &a));
}

/* ---- answers ------------------------------------------------------------ */

/* Answer with one leg's response as it is, plus an optional header line
 * ("Fanout-Upstream: users"). */
static void
request_answer_leg(struct request *r, struct leg *l, const char *name,
    const char *value)
{
	const struct http_header	*cl;
	struct evbuffer			*hdrs, *trailers;
	unsigned long long		 bytes = 0;
	long long			 len = -1;
	uint64_t			 v;
	char				 msg[64];
	int				 head = request_is_head(r);

	r->decided = 1;
	if (r->grpc && !grpc_answer_ok(l->status, &l->headers)) {
		/* An HTTP error (a load balancer's 503 page...) where a gRPC
		 * answer was due: told as gRPC tells it. */
		snprintf(msg, sizeof msg, "upstream answered HTTP %d",
		    l->status);
		r->grpc_status = grpc_from_http(l->status);
		if (r->front != NULL && (hdrs = request_headers_new(r)) != NULL) {
			evbuffer_add(hdrs, "Content-Type: application/grpc\r\n",
			    32);
			grpc_fields(hdrs, r->grpc_status, msg);
			bytes = front_respond(r->front, 200, hdrs, NULL, -2, NULL,
			    FRONT_KEEP);
			request_headers_done(r, hdrs);
		}
		request_end(r, 200, bytes);
		return;
	}
	if ((hdrs = leg_response_headers(r, &l->headers)) == NULL) {
		request_error(r, 503, "out_of_memory");
		return;
	}
	cl = http_headers_get(&l->headers, "content-length");
	if (name != NULL)
		evbuffer_add_printf(hdrs, "%s: %s\r\n", name, value);
	if (head) {
		/* A HEAD answer tells the length a GET would have. */
		len = 0;
		if (cl != NULL && parse_u64(cl->value, cl->valuelen,
		    INT64_MAX, &v) == 0)
			len = (long long)v;
	}
	if (r->grpc) {
		r->grpc_status = leg_grpc_status(l);
		len = -2;	/* the messages carry their lengths */
	}
	trailers = leg_trailers(r, l);
	if (r->front != NULL)
		bytes = front_respond(r->front, l->status, hdrs,
		    head ? NULL : l->body, len, trailers, FRONT_KEEP);
	request_headers_done(r, hdrs);
	if (trailers != NULL)
		evbuffer_free(trailers);
	request_end(r, l->status, bytes);
}

/* Answer with the envelope; partial lists failed legs (NULL: none). */
static void
request_answer_envelope(struct request *r, int status, const char *partial)
{
	struct evbuffer		*hdrs, *body;
	unsigned long long	 bytes = 0;

	r->decided = 1;
	if ((body = envelope_build(r->route, r->legs, r->nlegs)) == NULL) {
		request_error(r, 503, "out_of_memory");
		return;
	}
	if ((hdrs = request_headers_new(r)) == NULL) {
		evbuffer_free(body);
		request_error(r, 503, "out_of_memory");
		return;
	}
	evbuffer_add(hdrs, "Content-Type: application/json\r\n", 32);
	if (partial != NULL)
		evbuffer_add_printf(hdrs, "Fanout-Partial: %s\r\n", partial);
	if (r->front != NULL)
		bytes = front_respond(r->front, status, hdrs,
		    request_is_head(r) ? NULL : body,
		    request_is_head(r) ? (long long)evbuffer_get_length(body) : -1,
		    NULL, status == 503 ? FRONT_CLOSE : FRONT_KEEP);
	request_headers_done(r, hdrs);
	evbuffer_free(body);
	request_end(r, status, bytes);
}
