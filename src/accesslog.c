/*
 * accesslog.c: the access log. A line is built in memory and written with
 * one write(2) on an O_APPEND descriptor, so lines never interleave.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "accesslog.h"
#include "config.h"
#include "leg.h"
#include "log.h"
#include "util.h"

/*
 * Worker threads write to log_fd at any time, so its number never
 * changes once allocated: a new target (SIGUSR1, reload) is dup2()'d onto
 * it, which swaps the open file under the writers atomically. "off" is a
 * flag, not a descriptor.
 */
static int	 log_fd = -1;
static int	 log_on;	/* atomic */
static char	*log_path;	/* main thread only */

int
accesslog_open(const char *path)
{
	int	 fd, on = 1;
	char	*p;

	if (strcmp(path, "off") == 0) {
		fd = -1;
		on = 0;
	} else if (strcmp(path, "-") == 0)
		fd = STDERR_FILENO;
	else if ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
	    0640)) == -1)
		return (-1);
	if ((p = strdup(path)) == NULL)
		goto fail;
	if (fd != -1) {
		if (log_fd == -1) {
			if ((log_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) == -1)
				goto fail;
		} else if (dup3(fd, log_fd, O_CLOEXEC) == -1)
			goto fail;
		if (fd > STDERR_FILENO)
			close(fd);
	}
	__atomic_store_n(&log_on, on, __ATOMIC_RELEASE);
	free(log_path);
	log_path = p;
	return (0);
fail:
	free(p);
	if (fd > STDERR_FILENO)
		close(fd);
	return (-1);
}

int
accesslog_reopen(void)
{
	char	*path;
	int	 rv;

	if (log_path == NULL || strcmp(log_path, "off") == 0 ||
	    strcmp(log_path, "-") == 0)
		return (0);
	if ((path = strdup(log_path)) == NULL)
		return (-1);
	rv = accesslog_open(path);
	free(path);
	return (rv);
}

void
accesslog_close(void)
{
	__atomic_store_n(&log_on, 0, __ATOMIC_RELEASE);
	if (log_fd != -1)
		close(log_fd);
	log_fd = -1;
	free(log_path);
	log_path = NULL;
}

static void
add_str(struct evbuffer *b, const char *key, const char *s, size_t len)
{
	evbuffer_add_printf(b, ",\"%s\":", key);
	if (s == NULL)
		evbuffer_add(b, "null", 4);
	else
		json_append_string(b, s, len);
}

void
accesslog_write(const struct accesslog_entry *e)
{
	struct evbuffer		*b;
	const struct leg	*l;
	char			 now[40];
	size_t			 i, n;
	ssize_t			 w;
	unsigned char		*line;

	if (!__atomic_load_n(&log_on, __ATOMIC_ACQUIRE))
		return;
	if ((b = evbuffer_new()) == NULL)
		return;
	iso8601_now(now, sizeof now);
	evbuffer_add_printf(b, "{\"time\":\"%s\"", now);
	add_str(b, "request_id", e->request_id, strlen(e->request_id));
	add_str(b, "client", e->client, strlen(e->client));
	add_str(b, "method", e->method, strlen(e->method));
	add_str(b, "path", e->target, e->targetlen);
	add_str(b, "proto", e->proto, 8);
	evbuffer_add_printf(b, ",\"tls\":%s", e->tls ? "true" : "false");
	add_str(b, "route", e->route, e->route ? strlen(e->route) : 0);
	evbuffer_add_printf(b, ",\"status\":%d,\"bytes\":%llu,"
	    "\"duration_ms\":%.3f", e->status, e->bytes,
	    (now_us() - e->started_us) / 1000.0);
	add_str(b, "cancel_reason", e->cancel_reason,
	    e->cancel_reason ? strlen(e->cancel_reason) : 0);
	/* Only on a gRPC call: its answer's grpc-status. */
	if (e->grpc_status >= 0)
		evbuffer_add_printf(b, ",\"grpc_status\":%d", e->grpc_status);
	evbuffer_add(b, ",\"upstreams\":[", 14);
	for (i = n = 0; i < e->nlegs; i++) {
		l = &e->legs[i];
		if (l->up == NULL)
			continue;
		if (n++ > 0)
			evbuffer_add(b, ",", 1);
		evbuffer_add(b, "{\"name\":", 8);
		json_append_string(b, l->up->name, strlen(l->up->name));
		evbuffer_add(b, ",\"server\":", 10);
		if (l->server != NULL)
			json_append_string(b, l->server->url,
			    strlen(l->server->url));
		else
			evbuffer_add(b, "null", 4);
		switch (l->state == LEG_DONE ? l->outcome : LEG_CANCELLED) {
		case LEG_OK:
		case LEG_STATUS:
			evbuffer_add_printf(b, ",\"status\":%d", l->status);
			break;
		case LEG_FAILED:
			evbuffer_add_printf(b, ",\"error\":\"%s\"",
			    transfer_error_name(l->error));
			break;
		case LEG_CANCELLED:
			evbuffer_add_printf(b, ",\"error\":\"cancelled\","
			    "\"reason\":\"%s\"", l->state == LEG_IDLE ?
			    "not_sent" : cancel_reason_name(
			    cancel_reason_of(&l->cancel)));
			break;
		}
		evbuffer_add_printf(b, ",\"duration_ms\":%.3f",
		    l->duration_us / 1000.0);
		/* The ledger's figure for a leg cut in flight. */
		if (l->state == LEG_DONE && l->outcome == LEG_CANCELLED)
			evbuffer_add_printf(b, ",\"wasted_ms\":%.3f",
			    l->wasted_us / 1000.0);
		evbuffer_add(b, "}", 1);
	}
	evbuffer_add(b, "]}\n", 3);

	n = evbuffer_get_length(b);
	if ((line = evbuffer_pullup(b, -1)) != NULL) {
		w = write(log_fd, line, n);
		if (w != (ssize_t)n)
			log_debug("access log write failed: %s",
			    w == -1 ? strerror(errno) : "short write");
	}
	evbuffer_free(b);
}
