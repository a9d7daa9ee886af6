/*
 * config.h: the configuration (fanoutd.ini(5)), parsed with inih.
 *
 * A struct config is built whole, validated whole, and then only read. It is
 * reference counted: the server holds one reference, every request holds one
 * for its lifetime, so a reload swaps the pointer and in-flight requests
 * finish on the configuration they started with.
 */
#ifndef FANOUTD_CONFIG_H
#define FANOUTD_CONFIG_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "log.h"

#define CONFIG_MAX_LISTEN	16

struct ssl_ctx_st;

struct listen_addr {
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	char			 text[64];	/* as written, e.g. "[::1]:8080" */
	int			 tls;		/* "... tls": terminate TLS */
};

enum half_close_policy { HALF_CLOSE_CANCEL, HALF_CLOSE_WAIT };
enum http2_mode { HTTP2_OFF, HTTP2_PRIOR_KNOWLEDGE, HTTP2_ON };
enum route_mode { MODE_PROXY, MODE_ALL, MODE_FIRST, MODE_HEDGE, MODE_QUORUM };
enum partial_policy { PARTIAL_FAIL, PARTIAL_ALLOW };
enum tls_min_version { TLS_MIN_1_2, TLS_MIN_1_3 };

enum balance { BALANCE_ROUND_ROBIN, BALANCE_LEAST_REQUEST };

/*
 * What outlives a configuration: the health of a server (keyed by its
 * upstream's name and its URL) and the budget of a route (by name). Every
 * configuration that names the same server shares one server_state, so a
 * reload keeps it; it goes with the last configuration that names it.
 * config.c keeps the registry; health.c and budget.c give the fields
 * their meaning. Fields are atomics, or under the state's lock.
 */
struct state_entry {
	struct state_entry	*next;		/* the registry's */
	char			*key;
	unsigned		 refs;
	pthread_mutex_t		 lock;		/* the state's own */
};

struct server_state {
	struct state_entry	 entry;		/* first */

	unsigned		 inflight;	/* legs under way (atomic) */
	int			 checked_down;	/* active checks: out (atomic) */
	uint64_t		 ejected_until;	/* now_ms() clock, 0: not (atomic) */
	uint64_t		 ejections;	/* total, for the metric (atomic) */
	unsigned		 fails;		/* failures in a row (atomic) */

	/* under entry.lock, or the ejection lock (health.c) */
	unsigned		 streak;	/* ejections in a row: the doubling */
	uint64_t		 back_at;	/* when the last ejection ended */
	unsigned		 check_passes;	/* in a row */
	unsigned		 check_fails;
};

#define BUDGET_SLOTS	10		/* the window: 10 slots of 1 s */

struct route_state {
	struct state_entry	 entry;		/* first */

	uint64_t		 slot_sec[BUDGET_SLOTS];	/* which second */
	uint64_t		 requests[BUDGET_SLOTS];
	uint64_t		 extra[BUDGET_SLOTS];
};

/* "50%" or "2": a share of a whole, or a count. */
struct config_share {
	unsigned		 n;
	int			 percent;
};

#define UPSTREAM_SERVERS_MAX	64
#define UPSTREAM_WEIGHT_MAX	256

struct server_conf {
	char			*url;		/* base URL, no trailing slash;
						 * also the server's name */
	unsigned		 weight;
	struct server_state	*st;
};

/* Durations are kept in milliseconds, sizes in bytes. */
struct upstream_conf {
	char			*name;
	char			*url;		/* url's, or the first server's */
	char			*host_header;	/* "host[:port]" of url, for Host: */
	struct server_conf	*servers;
	size_t			 nservers;
	/* round robin: server indices, each as often as its weight, spread
	 * (smooth weighted round robin); a turn takes the next */
	unsigned short		*turns;
	size_t			 nturns;
	unsigned		 rr_next;	/* atomic, like route_conf's */
	enum balance		 balance;
	uint64_t		 dns_ttl_ms;
	unsigned		 eject_after;
	uint64_t		 eject_time_ms;
	uint64_t		 eject_time_max_ms;
	struct config_share	 max_ejected_share;	/* as written */
	unsigned		 max_ejected;	/* servers, resolved (>= 1) */
	char			*health_check;	/* path, NULL: off */
	uint64_t		 health_interval_ms;
	uint64_t		 health_timeout_ms;
	unsigned		 health_rise;
	unsigned		 health_fall;
	uint64_t		 connect_timeout_ms;
	uint64_t		 timeout_ms;
	enum http2_mode		 http2;
	uint64_t		 max_response_size;
	int			 tls_verify;
	char			*ca_file;	/* NULL when unset */
	int			 line;		/* where the section starts */
};

struct route_conf {
	char			*name;
	char			*match;		/* path prefix */
	int			 strip_prefix;
	unsigned		 methods;	/* bit mask of HTTP_M_*, 0 = any */
	enum route_mode		 mode;
	struct upstream_conf	**upstreams;	/* in the order written */
	size_t			 nupstreams;
	uint64_t		 deadline_ms;
	uint64_t		 hedge_delay_ms;
	unsigned		 quorum;
	enum partial_policy	 partial;
	int			 repeat_unsafe;
	unsigned		 budget_pct;
	unsigned		 budget_min;
	struct route_state	*st;
	int			 line;

	/* The one mutable field: mode proxy's round robin (atomic). */
	unsigned		 rr_next;
};

struct config {
	int			 refs;
	char			*path;
	/* "FILE:LINE: warning: ...\n" lines, NULL when there is none. */
	char			*warnings;

	/* [server] */
	struct listen_addr	 listen[CONFIG_MAX_LISTEN];
	size_t			 nlisten;
	unsigned		 workers;	/* 0 in the file = one per CPU, resolved */
	unsigned		 max_connections;
	uint64_t		 header_timeout_ms;
	uint64_t		 body_timeout_ms;
	uint64_t		 keepalive_timeout_ms;
	uint64_t		 max_header_size;
	uint64_t		 max_body_size;
	uint64_t		 drain_timeout_ms;
	enum half_close_policy	 half_close;
	char			*access_log;	/* path, "-", or "off" */
	enum log_level		 log_level;
	char			*tls_cert;	/* NULL when unset */
	char			*tls_key;
	char			*tls_ciphers;	/* NULL: tls.h's TLS_DEFAULT_CIPHERS */
	enum tls_min_version	 tls_min_version;
	int			 http2;		/* h2 and h2c on the front */
	unsigned		 h2_max_streams;
	uint64_t		 h2_stream_window;
	uint64_t		 h2_connection_window;
	struct ssl_ctx_st	*tls_ctx;	/* when a listen address has tls */

	/* [admin] */
	struct listen_addr	 admin_listen[CONFIG_MAX_LISTEN];
	size_t			 nadmin_listen;

	struct upstream_conf	**upstreams;
	size_t			 nupstreams;
	struct route_conf	**routes;	/* sorted: longest match first */
	size_t			 nroutes;
};

/* HTTP method bits for route_conf.methods. */
#define HTTP_M_GET	0x001
#define HTTP_M_HEAD	0x002
#define HTTP_M_POST	0x004
#define HTTP_M_PUT	0x008
#define HTTP_M_DELETE	0x010
#define HTTP_M_PATCH	0x020
#define HTTP_M_OPTIONS	0x040
#define HTTP_M_CONNECT	0x080
#define HTTP_M_TRACE	0x100
unsigned	 config_method_bit(const char *, size_t);

/*
 * Parse and validate path. On success returns a config with one reference,
 * and what is legal but likely a mistake in its warnings. On failure
 * returns NULL and sets *errors to a malloc'd text of every problem found,
 * one "FILE:LINE: message" per line, warnings among them (the caller frees
 * it).
 */
struct config	*config_load(const char *path, char **errors);
/* The same from a string; name is used in messages in place of the path. */
struct config	*config_load_string(const char *name, const char *text,
		    char **errors);
struct config	*config_ref(struct config *);
/* Each line of cfg->warnings at warn level, after prefix ("" or "reload: "). */
void		 config_log_warnings(const struct config *, const char *prefix);
void		 config_unref(struct config *);

/* The route for a path: the longest matching prefix, or NULL. */
const struct route_conf	*config_find_route(const struct config *,
			    const char *path, size_t len);

/* "250ms", "3s", "2m", "1h" -> milliseconds. 0 / -1. */
int	 config_parse_duration(const char *, uint64_t *ms);
/* "16k", "1m", "2g", "512" -> bytes (powers of 1024). 0 / -1. */
int	 config_parse_size(const char *, uint64_t *bytes);
/* "127.0.0.1:8080", "[::1]:8080", "*:8080" -> address. 0 / -1. */
int	 config_parse_listen(const char *, struct listen_addr *);

const char	*config_mode_name(enum route_mode);

#endif
