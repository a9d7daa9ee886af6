/*
 * envelope.c: the JSON envelope (see envelope.h).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "config.h"
#include "envelope.h"
#include "leg.h"
#include "util.h"

int
envelope_is_json_type(const char *ct, size_t len)
{
	size_t	end = 0;

	if (ct == NULL)
		return (0);
	while (end < len && ct[end] != ';' && ct[end] != ' ' && ct[end] != '\t')
		end++;
	if (end == 16 && strncasecmp(ct, "application/json", 16) == 0)
		return (1);
	return (end > 5 && strncasecmp(ct + end - 5, "+json", 5) == 0 &&
	    memchr(ct, '/', end) != NULL);
}

char *
envelope_base64(const unsigned char *in, size_t len)
{
	static const char	 tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char			*out, *p;
	size_t			 i;
	unsigned		 v;

	if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
		return (NULL);
	if ((out = p = malloc((len + 2) / 3 * 4 + 1)) == NULL)
		return (NULL);
	for (i = 0; i + 2 < len; i += 3) {
		v = in[i] << 16 | in[i + 1] << 8 | in[i + 2];
		*p++ = tab[v >> 18];
		*p++ = tab[(v >> 12) & 63];
		*p++ = tab[(v >> 6) & 63];
		*p++ = tab[v & 63];
	}
	if (i < len) {
		v = in[i] << 16 | (i + 1 < len ? in[i + 1] << 8 : 0);
		*p++ = tab[v >> 18];
		*p++ = tab[(v >> 12) & 63];
		*p++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
		*p++ = '=';
	}
	*p = '\0';
	return (out);
}

int
envelope_add_body(json_t *obj, const char *ctype, size_t ctlen,
    const unsigned char *body, size_t len)
{
	json_t	*v = NULL;
	char	*b64;

	if (envelope_is_json_type(ctype, ctlen) && len > 0)
		v = json_loadb((const char *)body, len,
		    JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	if (v == NULL && memchr(body, '\0', len) == NULL)
		v = json_stringn((const char *)body, len);	/* NULL: not UTF-8 */
	if (v != NULL)
		return (json_object_set_new(obj, "body", v));
	if ((b64 = envelope_base64(body, len)) == NULL)
		return (-1);
	v = json_string(b64);
	free(b64);
	return (json_object_set_new(obj, "body_base64", v));
}

static json_t *
envelope_leg(const struct leg *l)
{
	const struct http_header	*ct;
	json_t				*o;
	char				 reason[32];
	const unsigned char		*body;
	size_t				 len;

	if ((o = json_object()) == NULL)
		return (NULL);
	if (l->state != LEG_DONE) {
		/* Never sent (hedge), or still running when it was decided. */
		json_object_set_new(o, "error", json_string("cancelled"));
		json_object_set_new(o, "reason", json_string(
		    l->state == LEG_IDLE ? "not_sent" : "superseded"));
		return (o);
	}
	switch (l->outcome) {
	case LEG_STATUS:
		snprintf(reason, sizeof reason, "HTTP %d", l->status);
		json_object_set_new(o, "error", json_string("status"));
		json_object_set_new(o, "status", json_integer(l->status));
		json_object_set_new(o, "reason", json_string(reason));
		/* FALLTHROUGH */
	case LEG_OK:
		if (l->outcome == LEG_OK)
			json_object_set_new(o, "status", json_integer(l->status));
		len = l->body ? evbuffer_get_length(l->body) : 0;
		body = len ? evbuffer_pullup(l->body, -1) : (const unsigned char *)"";
		ct = http_headers_get(&l->headers, "content-type");
		if (envelope_add_body(o, ct ? ct->value : NULL,
		    ct ? ct->valuelen : 0, body, len) == -1)
			goto fail;
		break;
	case LEG_FAILED:
		json_object_set_new(o, "error",
		    json_string(transfer_error_name(l->error)));
		json_object_set_new(o, "reason",
		    json_string(l->detail ? l->detail : ""));
		break;
	case LEG_CANCELLED:
		json_object_set_new(o, "error", json_string("cancelled"));
		json_object_set_new(o, "reason", json_string(
		    cancel_reason_name(cancel_reason_of(&l->cancel))));
		break;
	}
	return (o);
fail:
	json_decref(o);
	return (NULL);
}

static int
envelope_dump_cb(const char *buf, size_t len, void *arg)
{
	return (evbuffer_add(arg, buf, len));
}

struct evbuffer *
envelope_build(const struct route_conf *rt, const struct leg *legs,
    size_t nlegs)
{
	struct evbuffer		*out = NULL;
	json_t			*env, *leg;
	size_t			 i, j;

	if ((env = json_object()) == NULL)
		return (NULL);
	/* Route order, whatever order the legs were sent in. */
	for (i = 0; i < rt->nupstreams; i++) {
		leg = NULL;
		for (j = 0; j < nlegs; j++) {
			if (legs[j].up == rt->upstreams[i]) {
				leg = envelope_leg(&legs[j]);
				break;
			}
		}
		if (j == nlegs) {
			leg = json_pack("{s:s, s:s}", "error", "cancelled",
			    "reason", "not_sent");
		}
		if (leg == NULL || json_object_set_new(env,
		    rt->upstreams[i]->name, leg) == -1)
			goto done;
	}
	if ((out = evbuffer_new()) == NULL)
		goto done;
	if (json_dump_callback(env, envelope_dump_cb, out, JSON_COMPACT) == -1) {
		evbuffer_free(out);
		out = NULL;
		goto done;
	}
	evbuffer_add(out, "\n", 1);
done:
	json_decref(env);
	return (out);
}
