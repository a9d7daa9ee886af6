/*
 * config.c: the configuration file (fanoutd.ini(5)).
 *
 * inih splits "key = value" lines; the rest is done here. A reader of our
 * own sits between the text and inih (ini_parse_stream), because inih alone
 * would
 *  - cut a line longer than its buffer into pieces, parse each piece as a
 *    line of its own and shift every line number after it;
 *  - cut section names at 50 bytes and never say where a section starts, so
 *    an empty or a duplicate section could not be reported at its line;
 *  - take an indented "key = value" for the continuation of the key above;
 *  - report only the line of its first syntax error.
 * So the reader gives inih one line at a time, whole or not at all: section
 * headers, comments and bad lines are handled here and reach inih as empty
 * lines; key lines reach it without their indentation. inih calls the
 * handler before it reads the next line, so the reader's line number and
 * current section are the handler's (inih's own are not used).
 *
 * inih strips an inline comment only when it starts with ';' (after a
 * blank); the reader strips one starting with '#' too, before inih sees the
 * line, so that both agree and '#' works as the example config uses it. A
 * value thus cannot hold a blank followed by ';' or '#'.
 *
 * Every problem is collected, sorted by line, and returned as one text of
 * "FILE:LINE: message\n" lines. The messages, exactly (tests assert them):
 *
 *   FILE: cannot open: STRERROR
 *   FILE: cannot read: STRERROR
 *   FILE: file too large (more than 16m)
 *   FILE: out of memory
 *   FILE:N: line too long (more than N characters)
 *   FILE:N: NUL character in line
 *   FILE:N: syntax error: missing ']'
 *   FILE:N: syntax error: unexpected text after ']'
 *   FILE:N: syntax error: expected 'key = value'
 *   FILE:N: unknown section [TEXT]
 *   FILE:N: section [TEXT] needs a quoted name, as in [upstream "NAME"]
 *   FILE:N: bad upstream name 'X' (1 to 64 letters, digits, '_', '.' or '-')
 *   FILE:N: bad route name 'X' (1 to 64 letters, digits, '_', '.' or '-')
 *   FILE:N: duplicate section [server] (first at line N)
 *   FILE:N: duplicate section [admin] (first at line N)
 *   FILE:N: duplicate upstream 'X' (first at line N)
 *   FILE:N: duplicate route 'X' (first at line N)
 *   FILE:N: key 'K' outside of any section
 *   FILE:N: unknown key 'K' in SECTION
 *   FILE:N: duplicate key 'K' in SECTION (first at line N)
 *   FILE:N: missing key 'K' in SECTION		(at the section's line)
 *   FILE:N: empty value for 'K'
 *   FILE:N: empty item in 'K'
 *   FILE:N: bad number 'V' for 'K'
 *   FILE:N: bad duration 'V' for 'K' (use ms, s, m or h)
 *   FILE:N: bad size 'V' for 'K' (use a number, optionally with k, m or g)
 *   FILE:N: bad boolean 'V' for 'K' (use yes or no)
 *   FILE:N: bad value 'V' for 'K' (use A, B or C)
 *   FILE:N: 'K' out of range: 'V' (MIN to MAX)
 *	quorum: MAX is the route's number of upstreams once they are known
 *   FILE:N: bad listen address 'V' (WHY)
 *	WHY: expected HOST:PORT | port must be 1 to 65535 |
 *	     not a numeric IPv4 or [IPv6] address | too long
 *   FILE:N: duplicate listen address 'V'
 *   FILE:N: too many listen addresses (at most 16)
 *   FILE:N: listen address 'V' is used by both [server] and [admin]
 *   FILE:N: bad url 'V' (WHY)
 *	WHY: use http:// or https:// | user info is not allowed |
 *	     a query is not allowed | a fragment is not allowed |
 *	     missing host | bad host | bad port |
 *	     spaces and control characters are not allowed
 *   FILE:N: http2 = on needs an https:// url (use prior-knowledge for h2c)
 *   FILE:N: 'url' and 'servers' both given in SECTION (use one)
 *   FILE:N: empty item in 'servers'
 *   FILE:N: bad server 'ITEM' in 'servers' (URL or URL weight=N)
 *   FILE:N: bad weight 'N' in 'servers' (1 to 256)
 *   FILE:N: duplicate server 'URL' in 'servers'
 *   FILE:N: too many servers (at most 64)
 *   FILE:N: bad value 'V' for 'max_ejected' (use N% or a number of servers)
 *   FILE:N: bad percentage 'V' for 'budget' (use N%)
 *   FILE:N: bad health_check 'V' (off, or a path starting with '/',
 *	     without '?', '#' or spaces)
 *   FILE:N: 'eject_time_max' (V) is below 'eject_time' (V)
 *   FILE:N: cannot use ca_file 'V': STRERROR
 *   FILE:N: cannot use ca_file 'V': not a regular file
 *   FILE:N: bad match 'V' (a path starting with '/', without '?', '#' or
 *	     spaces)
 *   FILE:N: duplicate match 'V' (first in route 'X' at line N)
 *   FILE:N: bad method 'M' for 'methods' (use GET, HEAD, POST, PUT,
 *	     DELETE, PATCH or OPTIONS)
 *   FILE:N: duplicate method 'M' in 'methods'
 *   FILE:N: route 'X' names unknown upstream 'Y'
 *   FILE:N: route 'X' lists upstream 'Y' twice
 *   FILE:N: syntax error			(inih found one we did not)
 *   FILE:N: cannot write access_log 'V': STRERROR	(the file exists)
 *   FILE:N: cannot create access_log 'V' in 'DIR': STRERROR
 *   FILE:N: bad tls_ciphers 'V' (no cipher suite that OpenSSL knows)
 *   FILE: no [route] section: nothing to serve
 *	(only when there is no other error: a misspelt [route] header is
 *	reported as itself)
 *
 * Warnings: what is legal but does nothing. They do not fail the load; -t
 * prints them on stderr and still says "FILE: ok", start-up and reload log
 * them at warn level (config_log_warnings). When there are errors too they
 * are listed with them, in line order:
 *
 *   FILE:N: warning: key 'K' has no effect in mode M (route 'X'; it is
 *	     for mode M2 | modes M2, M3 and M4)
 *	hedge_delay: hedge; quorum: quorum; partial: all; repeat_unsafe:
 *	first, hedge and quorum; budget, budget_min: proxy and hedge
 *   FILE:N: warning: key 'K' has no effect without health_check (upstream
 *	     'X')
 *	health_interval, health_timeout, health_rise, health_fall
 *   FILE:N: warning: key 'K' has no effect with eject_after = 0 (upstream
 *	     'X')
 *	eject_time, eject_time_max, max_ejected
 *   FILE:N: warning: key 'balance' has no effect with one server (upstream
 *	     'X')
 *   FILE:N: warning: key 'K' has no effect without a listen address with
 *	     'tls'
 *	tls_ciphers, tls_min_version
 *   FILE:N: warning: key 'tls_ciphers' has no effect with
 *	     tls_min_version = 1.3
 *
 * SECTION is written as in the file: [server], [admin], [upstream "NAME"],
 * [route "NAME"].
 */

#ifdef HAVE_CONFIG_H
#include "autoconf.h"
#endif

#include <sys/types.h>
#include <sys/stat.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>

#include "config.h"
#include "tls.h"

#ifndef nitems
#define nitems(a) (sizeof (a) / sizeof (a)[0])
#endif

#define CONFIG_LINE_MAX		4096		/* characters, without "\n" */
#define CONFIG_FILE_MAX		(16 * 1024 * 1024)
#define CONFIG_NAME_MAX		64

#define MS_SECOND		1000ULL
#define MS_MINUTE		(60 * MS_SECOND)
#define MS_HOUR			(60 * MS_MINUTE)
#define MS_DAY			(24 * MS_HOUR)
#define KB			1024ULL
#define MB			(1024 * KB)
#define GB			(1024 * MB)

/* The methods a route may name: CONNECT and TRACE are never proxied. */
#define ROUTE_METHODS	(HTTP_M_GET|HTTP_M_HEAD|HTTP_M_POST|HTTP_M_PUT| \
			 HTTP_M_DELETE|HTTP_M_PATCH|HTTP_M_OPTIONS)

enum key_type {
	KEY_LISTEN,
	KEY_UINT,
	KEY_DURATION,
	KEY_SIZE,
	KEY_BOOL,
	KEY_CHOICE,
	KEY_STRING,
	KEY_LOG,
	KEY_FILE,
	KEY_CIPHERS,
	KEY_URL,
	KEY_MATCH,
	KEY_METHODS,
	KEY_NAMES,
	KEY_SERVERS,
	KEY_SHARE,	/* "N%" or a count N: max_ejected */
	KEY_PERCENT,	/* "N%": budget */
	KEY_CHECK,	/* "off" or a path: health_check */
};

#define KEY_REQUIRED	0x1

struct config_key {
	const char		*section;
	const char		*name;
	enum key_type		 type;
	size_t			 off;		/* in config or *_conf */
	uint64_t		 min;
	uint64_t		 max;
	const char		*dflt;		/* parsed when absent */
	const char *const	*choices;	/* in the order of the enum */
	int			 flags;
};

static const char *const half_close_choices[] = { "cancel", "wait", NULL };
static const char *const log_level_choices[] = {
	"error", "warn", "info", "debug", NULL
};
static const char *const http2_choices[] = {
	"off", "prior-knowledge", "on", NULL
};
static const char *const mode_choices[] = {
	"proxy", "all", "first", "hedge", "quorum", NULL
};
static const char *const partial_choices[] = { "fail", "allow", NULL };
static const char *const tls_version_choices[] = { "1.2", "1.3", NULL };
static const char *const balance_choices[] = {
	"round_robin", "least_request", NULL
};

#define S(f)	offsetof(struct config, f)
#define U(f)	offsetof(struct upstream_conf, f)
#define R(f)	offsetof(struct route_conf, f)

/*
 * Every key, one per line starting with { "SECTION", "KEY":
 * tests/check-config-keys.sh greps this table against fanoutd.ini(5).
 */
static const struct config_key config_keys[] = {
	{ "server", "listen", KEY_LISTEN,
	  S(listen), 0, 0, "127.0.0.1:8080", NULL, 0 },
	{ "server", "workers", KEY_UINT,
	  S(workers), 0, 1024, "1", NULL, 0 },
	{ "server", "max_connections", KEY_UINT,
	  S(max_connections), 1, 1000000, "10000", NULL, 0 },
	{ "server", "header_timeout", KEY_DURATION,
	  S(header_timeout_ms), 1, MS_DAY, "10s", NULL, 0 },
	{ "server", "body_timeout", KEY_DURATION,
	  S(body_timeout_ms), 1, MS_DAY, "30s", NULL, 0 },
	{ "server", "keepalive_timeout", KEY_DURATION,
	  S(keepalive_timeout_ms), 0, MS_DAY, "60s", NULL, 0 },
	{ "server", "max_header_size", KEY_SIZE,
	  S(max_header_size), KB, MB, "16k", NULL, 0 },
	{ "server", "max_body_size", KEY_SIZE,
	  S(max_body_size), 0, 4 * GB, "1m", NULL, 0 },
	{ "server", "drain_timeout", KEY_DURATION,
	  S(drain_timeout_ms), 0, MS_DAY, "30s", NULL, 0 },
	{ "server", "half_close", KEY_CHOICE,
	  S(half_close), 0, 0, "cancel", half_close_choices, 0 },
	{ "server", "access_log", KEY_LOG,
	  S(access_log), 0, 0, "-", NULL, 0 },
	{ "server", "log_level", KEY_CHOICE,
	  S(log_level), 0, 0, "info", log_level_choices, 0 },
	{ "server", "tls_cert", KEY_FILE,
	  S(tls_cert), 0, 0, NULL, NULL, 0 },
	{ "server", "tls_key", KEY_FILE,
	  S(tls_key), 0, 0, NULL, NULL, 0 },
	{ "server", "tls_ciphers", KEY_CIPHERS,
	  S(tls_ciphers), 0, 0, NULL, NULL, 0 },
	{ "server", "tls_min_version", KEY_CHOICE,
	  S(tls_min_version), 0, 0, "1.2", tls_version_choices, 0 },
	{ "server", "http2", KEY_BOOL,
	  S(http2), 0, 0, "on", NULL, 0 },
	{ "server", "h2_max_concurrent_streams", KEY_UINT,
	  S(h2_max_streams), 1, 10000, "128", NULL, 0 },
	{ "server", "h2_stream_window", KEY_SIZE,
	  S(h2_stream_window), KB, GB, "64k", NULL, 0 },
	{ "server", "h2_connection_window", KEY_SIZE,
	  S(h2_connection_window), 64 * KB, GB, "1m", NULL, 0 },

	{ "admin", "listen", KEY_LISTEN,
	  S(admin_listen), 0, 0, "127.0.0.1:9901", NULL, 0 },

	/* url or servers, one of them: checked once both are known. */
	{ "upstream", "url", KEY_URL,
	  U(url), 0, 0, NULL, NULL, 0 },
	{ "upstream", "servers", KEY_SERVERS,
	  U(servers), 1, UPSTREAM_WEIGHT_MAX, NULL, NULL, 0 },
	{ "upstream", "balance", KEY_CHOICE,
	  U(balance), 0, 0, "round_robin", balance_choices, 0 },
	{ "upstream", "dns_ttl", KEY_DURATION,
	  U(dns_ttl_ms), 0, MS_DAY, "60s", NULL, 0 },
	{ "upstream", "eject_after", KEY_UINT,
	  U(eject_after), 0, 1000, "5", NULL, 0 },
	{ "upstream", "eject_time", KEY_DURATION,
	  U(eject_time_ms), 1, MS_DAY, "30s", NULL, 0 },
	{ "upstream", "eject_time_max", KEY_DURATION,
	  U(eject_time_max_ms), 1, MS_DAY, "5m", NULL, 0 },
	{ "upstream", "max_ejected", KEY_SHARE,
	  U(max_ejected_share), 0, 100, "50%", NULL, 0 },
	{ "upstream", "health_check", KEY_CHECK,
	  U(health_check), 0, 0, NULL, NULL, 0 },
	{ "upstream", "health_interval", KEY_DURATION,
	  U(health_interval_ms), 10, MS_DAY, "5s", NULL, 0 },
	{ "upstream", "health_timeout", KEY_DURATION,
	  U(health_timeout_ms), 1, MS_DAY, "1s", NULL, 0 },
	{ "upstream", "health_rise", KEY_UINT,
	  U(health_rise), 1, 100, "2", NULL, 0 },
	{ "upstream", "health_fall", KEY_UINT,
	  U(health_fall), 1, 100, "3", NULL, 0 },
	{ "upstream", "connect_timeout", KEY_DURATION,
	  U(connect_timeout_ms), 1, MS_DAY, "1s", NULL, 0 },
	{ "upstream", "timeout", KEY_DURATION,
	  U(timeout_ms), 1, MS_DAY, "5s", NULL, 0 },
	{ "upstream", "http2", KEY_CHOICE,
	  U(http2), 0, 0, "off", http2_choices, 0 },
	{ "upstream", "max_response_size", KEY_SIZE,
	  U(max_response_size), KB, 4 * GB, "8m", NULL, 0 },
	{ "upstream", "tls_verify", KEY_BOOL,
	  U(tls_verify), 0, 0, "on", NULL, 0 },
	{ "upstream", "ca_file", KEY_FILE,
	  U(ca_file), 0, 0, NULL, NULL, 0 },

	{ "route", "match", KEY_MATCH,
	  R(match), 0, 0, NULL, NULL, KEY_REQUIRED },
	{ "route", "strip_prefix", KEY_BOOL,
	  R(strip_prefix), 0, 0, "no", NULL, 0 },
	{ "route", "methods", KEY_METHODS,
	  R(methods), 0, 0, NULL, NULL, 0 },
	{ "route", "mode", KEY_CHOICE,
	  R(mode), 0, 0, "proxy", mode_choices, 0 },
	{ "route", "upstreams", KEY_NAMES,
	  R(upstreams), 0, 0, NULL, NULL, KEY_REQUIRED },
	{ "route", "deadline", KEY_DURATION,
	  R(deadline_ms), 1, MS_DAY, "30s", NULL, 0 },
	{ "route", "hedge_delay", KEY_DURATION,
	  R(hedge_delay_ms), 0, MS_DAY, "50ms", NULL, 0 },
	/* At most the number of upstreams: checked once they are known. */
	{ "route", "quorum", KEY_UINT,
	  R(quorum), 1, 1000000, NULL, NULL, 0 },
	{ "route", "partial", KEY_CHOICE,
	  R(partial), 0, 0, "fail", partial_choices, 0 },
	{ "route", "repeat_unsafe", KEY_BOOL,
	  R(repeat_unsafe), 0, 0, "no", NULL, 0 },
	{ "route", "budget", KEY_PERCENT,
	  R(budget_pct), 0, 1000, "20%", NULL, 0 },
	{ "route", "budget_min", KEY_UINT,
	  R(budget_min), 0, 100000, "10", NULL, 0 },
};

#undef S
#undef U
#undef R

#define NKEYS	nitems(config_keys)

enum section_type {
	SECTION_SERVER,
	SECTION_ADMIN,
	SECTION_UPSTREAM,
	SECTION_ROUTE,
	SECTION_IGNORE,		/* bad or duplicate: its keys are skipped */
};

static const char *const section_names[] = {
	"server", "admin", "upstream", "route", NULL
};

struct section {
	enum section_type	 type;
	int			 line;
	char			 label[CONFIG_NAME_MAX + 32];
	const char		*name;		/* upstream or route name */
	void			*base;
	int			 seen[NKEYS];	/* line of each key or 0 */
	int			 bad[NKEYS];	/* its value was reported */
	char			*names;		/* route: upstreams */
};

struct config_error {
	int			 line;
	size_t			 seq;
	char			*msg;		/* a warning's begins "warning: " */
};

struct parse {
	const char		*file;
	struct config		*cfg;

	const char		*pos;
	const char		*end;
	int			 lineno;

	struct section		**sections;
	size_t			 nsections;
	struct section		*cur;
	struct section		*server;
	struct section		*admin;

	int			 nroutes;	/* [route ...] headers, bad too */

	struct config_error	*errors;	/* and warnings */
	size_t			 nerrors;	/* errors and warnings */
	size_t			 nwarnings;
	int			 oom;
};

static void	config_error(struct parse *, int, const char *, ...)
		    __attribute__((format(printf, 3, 4)));
static void	config_warning(struct parse *, int, const char *, ...)
		    __attribute__((format(printf, 3, 4)));
static void	config_report(struct parse *, int, const char *,
		    const char *, va_list)
		    __attribute__((format(printf, 4, 0)));

static void
config_error(struct parse *p, int line, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	config_report(p, line, "", fmt, ap);
	va_end(ap);
}

static void
config_warning(struct parse *p, int line, const char *fmt, ...)
{
	va_list	ap;
	size_t	n = p->nerrors;

	va_start(ap, fmt);
	config_report(p, line, "warning: ", fmt, ap);
	va_end(ap);
	p->nwarnings += p->nerrors - n;
}

/* Whether anything but warnings was reported. */
static int
config_failed(const struct parse *p)
{
	return (p->oom || p->nerrors != p->nwarnings);
}

static void
config_report(struct parse *p, int line, const char *prefix, const char *fmt,
    va_list ap)
{
	struct config_error	*e;
	va_list			 ap2;
	char			*msg;
	size_t			 plen = strlen(prefix);
	int			 n;

	if (p->oom)
		return;
	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0 || (msg = malloc(plen + (size_t)n + 1)) == NULL)
		goto fail;
	memcpy(msg, prefix, plen);
	vsnprintf(msg + plen, (size_t)n + 1, fmt, ap);

	e = reallocarray(p->errors, p->nerrors + 1, sizeof *p->errors);
	if (e == NULL) {
		free(msg);
		goto fail;
	}
	p->errors = e;
	e[p->nerrors].line = line;
	e[p->nerrors].seq = p->nerrors;
	e[p->nerrors].msg = msg;
	p->nerrors++;
	return;

fail:
	p->oom = 1;
}

static char *
parse_strndup(struct parse *p, const char *s, size_t len)
{
	char	*cp;

	if ((cp = strndup(s, len)) == NULL)
		p->oom = 1;
	return (cp);
}

static int
config_key_index(const char *section, const char *name)
{
	size_t	i;

	for (i = 0; i < NKEYS; i++) {
		if (strcmp(config_keys[i].section, section) == 0 &&
		    strcmp(config_keys[i].name, name) == 0)
			return ((int)i);
	}
	return (-1);
}

/* Digits only, at least one, no sign, no overflow. */
static int
parse_digits(const char *s, uint64_t *v, const char **end)
{
	uint64_t	n = 0;
	unsigned	d;

	if (*s < '0' || *s > '9')
		return (-1);
	for (; *s >= '0' && *s <= '9'; s++) {
		d = (unsigned)(*s - '0');
		if (n > (UINT64_MAX - d) / 10)
			return (-1);
		n = n * 10 + d;
	}
	*v = n;
	*end = s;
	return (0);
}

int
config_parse_duration(const char *s, uint64_t *ms)
{
	const char	*end;
	uint64_t	 n, unit;

	if (parse_digits(s, &n, &end) != 0)
		return (-1);
	if (strcmp(end, "ms") == 0)
		unit = 1;
	else if (strcmp(end, "s") == 0)
		unit = MS_SECOND;
	else if (strcmp(end, "m") == 0)
		unit = MS_MINUTE;
	else if (strcmp(end, "h") == 0)
		unit = MS_HOUR;
	else
		return (-1);
	if (n > UINT64_MAX / unit)
		return (-1);
	*ms = n * unit;
	return (0);
}

int
config_parse_size(const char *s, uint64_t *bytes)
{
	const char	*end;
	uint64_t	 n;
	unsigned	 shift;

	if (parse_digits(s, &n, &end) != 0)
		return (-1);
	switch (*end) {
	case '\0':
		shift = 0;
		break;
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	default:
		return (-1);
	}
	if (shift != 0 && end[1] != '\0')
		return (-1);
	if (n > (UINT64_MAX >> shift))
		return (-1);
	*bytes = n << shift;
	return (0);
}

static void
duration_text(uint64_t ms, char *buf, size_t len)
{
	unsigned long long	v = ms;

	if (v != 0 && v % MS_HOUR == 0)
		snprintf(buf, len, "%lluh", v / MS_HOUR);
	else if (v != 0 && v % MS_MINUTE == 0)
		snprintf(buf, len, "%llum", v / MS_MINUTE);
	else if (v % MS_SECOND == 0)
		snprintf(buf, len, "%llus", v / MS_SECOND);
	else
		snprintf(buf, len, "%llums", v);
}

static void
size_text(uint64_t bytes, char *buf, size_t len)
{
	unsigned long long	v = bytes;

	if (v != 0 && v % GB == 0)
		snprintf(buf, len, "%llug", v / GB);
	else if (v != 0 && v % MB == 0)
		snprintf(buf, len, "%llum", v / MB);
	else if (v != 0 && v % KB == 0)
		snprintf(buf, len, "%lluk", v / KB);
	else
		snprintf(buf, len, "%llu", v);
}

static int
parse_bool(const char *s, int *v)
{
	static const char *const yes[] = { "yes", "on", "true", "1" };
	static const char *const no[] = { "no", "off", "false", "0" };
	size_t			 i;

	for (i = 0; i < nitems(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*v = 1;
			return (0);
		}
		if (strcasecmp(s, no[i]) == 0) {
			*v = 0;
			return (0);
		}
	}
	return (-1);
}

/*
 * The next item of a comma-separated list, without the blanks around it.
 * An empty item (",,", a trailing comma, an empty value) has len 0.
 */
static int
list_next(const char **sp, const char **item, size_t *len)
{
	const char	*s = *sp, *end;

	if (s == NULL)
		return (0);
	while (*s == ' ' || *s == '\t')
		s++;
	end = strchr(s, ',');
	*sp = (end == NULL) ? NULL : end + 1;
	if (end == NULL)
		end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*item = s;
	*len = (size_t)(end - s);
	return (1);
}

static int
parse_port(const char *s, char *out, size_t outlen)
{
	const char	*end;
	uint64_t	 port;

	if (parse_digits(s, &port, &end) != 0 || *end != '\0')
		return (-1);
	if (port < 1 || port > 65535)
		return (-1);
	snprintf(out, outlen, "%u", (unsigned)port);
	return (0);
}

static int
listen_parse(const char *s, size_t len, struct listen_addr *la,
    const char **why)
{
	struct addrinfo	 hints, *res = NULL;
	char		 buf[sizeof la->text], port[8];
	char		*colon, *close, *scope;
	const char	*host;
	int		 error;
	struct in_addr	 in4;
	struct in6_addr	 in6;

	*why = "too long";
	if (len >= sizeof buf)
		return (-1);
	memcpy(buf, s, len);
	buf[len] = '\0';

	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST|AI_NUMERICSERV|AI_PASSIVE;

	*why = "expected HOST:PORT";
	if (buf[0] == '[') {
		if ((close = strchr(buf, ']')) == NULL || close[1] != ':')
			return (-1);
		*close = '\0';
		host = buf + 1;
		colon = close + 1;
		hints.ai_family = AF_INET6;
	} else {
		if ((colon = strrchr(buf, ':')) == NULL || colon == buf)
			return (-1);
		*colon = '\0';
		host = buf;
		hints.ai_family = AF_INET;
		if (strcmp(host, "*") == 0)
			host = "0.0.0.0";
		else if (strcmp(host, "localhost") == 0)
			host = "127.0.0.1";
	}
	*why = "port must be 1 to 65535";
	if (parse_port(colon + 1, port, sizeof port) != 0)
		return (-1);

	/*
	 * getaddrinfo would also take "127.1", "0x7f.0.0.1" or "[*]"; inet_pton
	 * does not, but knows no "%scope": that is left to getaddrinfo.
	 */
	*why = "not a numeric IPv4 or [IPv6] address";
	if (hints.ai_family == AF_INET && inet_pton(AF_INET, host, &in4) != 1)
		return (-1);
	if (hints.ai_family == AF_INET6) {
		if ((scope = strchr(buf, '%')) != NULL)
			*scope = '\0';
		if (inet_pton(AF_INET6, host, &in6) != 1)
			return (-1);
		if (scope != NULL)
			*scope = '%';
	}
	if ((error = getaddrinfo(host, port, &hints, &res)) != 0) {
		if (error == EAI_MEMORY)
			*why = NULL;
		return (-1);
	}
	if (res->ai_addrlen > sizeof la->ss) {
		freeaddrinfo(res);
		return (-1);
	}
	memset(la, 0, sizeof *la);
	memcpy(&la->ss, res->ai_addr, res->ai_addrlen);
	la->sslen = res->ai_addrlen;
	freeaddrinfo(res);
	memcpy(la->text, s, len);
	la->text[len] = '\0';
	return (0);
}

int
config_parse_listen(const char *s, struct listen_addr *la)
{
	const char	*why;

	return (listen_parse(s, strlen(s), la, &why));
}

static int
listen_same(const struct listen_addr *a, const struct listen_addr *b)
{
	const struct sockaddr_in	*a4, *b4;
	const struct sockaddr_in6	*a6, *b6;

	if (a->ss.ss_family != b->ss.ss_family)
		return (0);
	if (a->ss.ss_family == AF_INET) {
		a4 = (const struct sockaddr_in *)&a->ss;
		b4 = (const struct sockaddr_in *)&b->ss;
		return (a4->sin_port == b4->sin_port &&
		    a4->sin_addr.s_addr == b4->sin_addr.s_addr);
	}
	a6 = (const struct sockaddr_in6 *)&a->ss;
	b6 = (const struct sockaddr_in6 *)&b->ss;
	return (a6->sin6_port == b6->sin6_port &&
	    a6->sin6_scope_id == b6->sin6_scope_id &&
	    memcmp(&a6->sin6_addr, &b6->sin6_addr, sizeof a6->sin6_addr) == 0);
}

static int
host_char(int c)
{
	return ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_');
}

/*
 * An upstream's base URL: http or https, a host, an optional port and path;
 * no user info, query or fragment, as the request's own are appended.
 */
static int
url_parse(const char *s, char **url, char **host, const char **why)
{
	const char	*auth, *end, *h, *hend, *port, *cp;
	char		 v6[INET6_ADDRSTRLEN + 1], portbuf[8], portnum[8];
	struct in6_addr	 in6;
	size_t		 len;

	*url = *host = NULL;
	for (cp = s; *cp != '\0'; cp++) {
		if ((unsigned char)*cp <= ' ' || *cp == 0x7f) {
			*why = "spaces and control characters are not allowed";
			return (-1);
		}
	}
	if (strncasecmp(s, "http://", 7) == 0)
		auth = s + 7;
	else if (strncasecmp(s, "https://", 8) == 0)
		auth = s + 8;
	else {
		*why = "use http:// or https://";
		return (-1);
	}
	if (strchr(s, '#') != NULL) {
		*why = "a fragment is not allowed";
		return (-1);
	}
	if (strchr(s, '?') != NULL) {
		*why = "a query is not allowed";
		return (-1);
	}
	end = auth + strcspn(auth, "/");
	if (memchr(auth, '@', (size_t)(end - auth)) != NULL) {
		*why = "user info is not allowed";
		return (-1);
	}
	if (end == auth) {
		*why = "missing host";
		return (-1);
	}

	*why = "bad host";
	if (*auth == '[') {
		h = auth + 1;
		if ((hend = memchr(h, ']', (size_t)(end - h))) == NULL)
			return (-1);
		len = (size_t)(hend - h);
		if (len == 0 || len >= sizeof v6)
			return (-1);
		memcpy(v6, h, len);
		v6[len] = '\0';
		if (inet_pton(AF_INET6, v6, &in6) != 1)
			return (-1);
		port = hend + 1;
	} else {
		for (hend = auth; hend < end && *hend != ':'; hend++) {
			if (!host_char((unsigned char)*hend))
				return (-1);
		}
		if (hend == auth) {
			*why = "missing host";
			return (-1);
		}
		port = hend;
	}
	if (port != end) {
		*why = "bad port";
		if (*port != ':' || (size_t)(end - port) > 6)
			return (-1);
		memcpy(portbuf, port + 1, (size_t)(end - port - 1));
		portbuf[end - port - 1] = '\0';
		if (parse_port(portbuf, portnum, sizeof portnum) != 0)
			return (-1);
	}

	/* No trailing slash: the request's path brings its own. */
	len = strlen(s);
	while (len > (size_t)(end - s) && s[len - 1] == '/')
		len--;
	if ((*url = strndup(s, len)) == NULL)
		goto fail;
	if ((*host = strndup(auth, (size_t)(end - auth))) == NULL)
		goto fail;
	return (0);

fail:
	free(*url);
	*url = NULL;
	*why = NULL;		/* out of memory */
	return (-1);
}

unsigned
config_method_bit(const char *s, size_t len)
{
	static const struct {
		const char	*name;
		unsigned	 bit;
	} methods[] = {
		{ "GET", HTTP_M_GET },
		{ "HEAD", HTTP_M_HEAD },
		{ "POST", HTTP_M_POST },
		{ "PUT", HTTP_M_PUT },
		{ "DELETE", HTTP_M_DELETE },
		{ "PATCH", HTTP_M_PATCH },
		{ "OPTIONS", HTTP_M_OPTIONS },
		{ "CONNECT", HTTP_M_CONNECT },
		{ "TRACE", HTTP_M_TRACE },
	};
	size_t	i;

	/* Method names are case-sensitive (RFC 9110, 9.1). */
	for (i = 0; i < nitems(methods); i++) {
		if (strlen(methods[i].name) == len &&
		    memcmp(methods[i].name, s, len) == 0)
			return (methods[i].bit);
	}
	return (0);
}

const char *
config_mode_name(enum route_mode mode)
{
	if ((size_t)mode >= nitems(mode_choices) - 1)
		return ("unknown");
	return (mode_choices[mode]);
}

static int
match_valid(const char *s)
{
	if (*s != '/')
		return (0);
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s <= ' ' || *s == 0x7f || *s == '?' ||
		    *s == '#')
			return (0);
	}
	return (1);
}

static void
config_set_listen(struct parse *p, struct section *sec, const char *value,
    int line)
{
	struct config		*cfg = p->cfg;
	struct listen_addr	*arr, la;
	size_t			*n, i, len;
	const char		*item, *why;
	int			 tls;

	if (sec->type == SECTION_ADMIN) {
		arr = cfg->admin_listen;
		n = &cfg->nadmin_listen;
	} else {
		arr = cfg->listen;
		n = &cfg->nlisten;
	}
	while (list_next(&value, &item, &len)) {
		if (len == 0) {
			config_error(p, line, "empty item in 'listen'");
			continue;
		}
		tls = 0;
		if (len > 4 && strncasecmp(item + len - 4, " tls", 4) == 0) {
			tls = 1;
			for (len -= 4; len > 0 && (item[len - 1] == ' ' ||
			    item[len - 1] == '\t'); len--)
				;
		}
		if (tls && sec->type == SECTION_ADMIN) {
			config_error(p, line, "tls is not supported on the "
			    "admin listener: '%.*s'", (int)len, item);
			continue;
		}
		if (listen_parse(item, len, &la, &why) != 0) {
			if (why == NULL) {
				p->oom = 1;
				return;
			}
			config_error(p, line, "bad listen address '%.*s' (%s)",
			    (int)len, item, why);
			continue;
		}
		for (i = 0; i < *n; i++) {
			if (listen_same(&arr[i], &la))
				break;
		}
		if (i != *n) {
			config_error(p, line, "duplicate listen address '%s'",
			    la.text);
			continue;
		}
		if (*n == CONFIG_MAX_LISTEN) {
			config_error(p, line, "too many listen addresses "
			    "(at most %d)", CONFIG_MAX_LISTEN);
			return;
		}
		la.tls = tls;
		arr[(*n)++] = la;
	}
}

static void
config_set_methods(struct parse *p, unsigned *mask, const char *value,
    int line)
{
	const char	*item;
	size_t		 len;
	unsigned	 bit;

	while (list_next(&value, &item, &len)) {
		if (len == 0) {
			config_error(p, line, "empty item in 'methods'");
			continue;
		}
		bit = config_method_bit(item, len);
		if ((bit & ROUTE_METHODS) == 0) {
			config_error(p, line, "bad method '%.*s' for 'methods' "
			    "(use GET, HEAD, POST, PUT, DELETE, PATCH or "
			    "OPTIONS)", (int)len, item);
			continue;
		}
		if (*mask & bit) {
			config_error(p, line, "duplicate method '%.*s' in "
			    "'methods'", (int)len, item);
			continue;
		}
		*mask |= bit;
	}
}

/*
 * servers = URL [weight=N], ...: each URL checked as url's, at most
 * UPSTREAM_SERVERS_MAX of them, none twice.
 */
static void
config_set_servers(struct parse *p, struct upstream_conf *u, const char *value,
    int line)
{
	struct server_conf	*sv, *all;
	const char		*item, *sp, *why, *end;
	char			*url, *host, *parsed;
	size_t			 len, ulen, i;
	uint64_t		 w;

	while (list_next(&value, &item, &len)) {
		if (len == 0) {
			config_error(p, line, "empty item in 'servers'");
			continue;
		}
		ulen = strcspn(item, " \t");
		if (ulen > len)
			ulen = len;
		w = 1;
		sp = item + ulen;
		while (sp < item + len && (*sp == ' ' || *sp == '\t'))
			sp++;
		if (sp < item + len && strncmp(sp, "weight=", 7) != 0) {
			config_error(p, line, "bad server '%.*s' in 'servers' "
			    "(URL or URL weight=N)", (int)len, item);
			continue;
		}
		if (sp < item + len && (parse_digits(sp + 7, &w, &end) != 0 ||
		    end != item + len || w < 1 || w > UPSTREAM_WEIGHT_MAX)) {
			config_error(p, line, "bad weight '%.*s' in 'servers' "
			    "(1 to %d)", (int)(item + len - sp - 7), sp + 7,
			    UPSTREAM_WEIGHT_MAX);
			continue;
		}
		if ((url = parse_strndup(p, item, ulen)) == NULL)
			return;
		if (url_parse(url, &parsed, &host, &why) != 0) {
			if (why == NULL)
				p->oom = 1;
			else
				config_error(p, line, "bad url '%s' (%s)", url,
				    why);
			free(url);
			continue;
		}
		free(url);
		free(host);
		url = parsed;
		for (i = 0; i < u->nservers; i++) {
			if (strcmp(u->servers[i].url, url) == 0)
				break;
		}
		if (i < u->nservers) {
			config_error(p, line, "duplicate server '%s' in "
			    "'servers'", url);
			free(url);
			continue;
		}
		if (u->nservers == UPSTREAM_SERVERS_MAX) {
			config_error(p, line, "too many servers (at most %d)",
			    UPSTREAM_SERVERS_MAX);
			free(url);
			return;
		}
		all = reallocarray(u->servers, u->nservers + 1, sizeof *all);
		if (all == NULL) {
			free(url);
			p->oom = 1;
			return;
		}
		u->servers = all;
		sv = &all[u->nservers++];
		memset(sv, 0, sizeof *sv);
		sv->url = url;
		sv->weight = (unsigned)w;
	}
}

/* "50%" (a share, up to k->max percent) or "2" (a count). */
static void
config_set_share(struct parse *p, const struct config_key *k,
    struct config_share *v, const char *value, int line, int percent_only)
{
	const char	*end;
	uint64_t	 n;

	if (parse_digits(value, &n, &end) != 0 ||
	    (*end != '\0' && strcmp(end, "%") != 0) ||
	    (percent_only && *end != '%')) {
		config_error(p, line, "bad %s '%s' for '%s' (use %s)",
		    percent_only ? "percentage" : "value", value, k->name,
		    percent_only ? "N%" : "N% or a number of servers");
		return;
	}
	v->percent = (*end == '%');
	if (v->percent && n > k->max) {
		config_error(p, line, "'%s' out of range: '%s' (0%% to "
		    "%llu%%)", k->name, value, (unsigned long long)k->max);
		return;
	}
	if (!v->percent && n > UPSTREAM_SERVERS_MAX) {
		config_error(p, line, "'%s' out of range: '%s' (0 to %d)",
		    k->name, value, UPSTREAM_SERVERS_MAX);
		return;
	}
	v->n = (unsigned)n;
}

static void
config_set_choice(struct parse *p, const struct config_key *k, int *v,
    const char *value, int line)
{
	char	hint[128];
	size_t	i, n, off;

	for (i = 0; k->choices[i] != NULL; i++) {
		if (strcmp(value, k->choices[i]) == 0) {
			*v = (int)i;
			return;
		}
	}
	n = i;
	hint[0] = '\0';
	for (i = 0, off = 0; i < n && off < sizeof hint; i++) {
		off += (size_t)snprintf(hint + off, sizeof hint - off, "%s%s",
		    i == 0 ? "" : (i == n - 1 ? " or " : ", "), k->choices[i]);
	}
	config_error(p, line, "bad value '%s' for '%s' (use %s)", value,
	    k->name, hint);
}

static void
config_set_file(struct parse *p, const struct config_key *k, char **v,
    const char *value, int line)
{
	struct stat	 st;
	int		 fd;

	if (*value == '\0')
		return;		/* "ca_file =" is unset */
	/* O_NONBLOCK: a FIFO must not hang the load. */
	if ((fd = open(value, O_RDONLY|O_NONBLOCK|O_CLOEXEC)) == -1) {
		config_error(p, line, "cannot use %s '%s': %s", k->name, value,
		    strerror(errno));
		return;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(fd);
		config_error(p, line, "cannot use %s '%s': not a regular file",
		    k->name, value);
		return;
	}
	close(fd);
	*v = parse_strndup(p, value, strlen(value));
}

/*
 * The access log is opened for appending at start-up and at a reload: say
 * here, at its line, when that would fail. access(2), not open(2): -t must
 * neither create the file nor touch it.
 */
static void
config_set_log(struct parse *p, char **v, const char *value, int line)
{
	struct stat	 st;
	const char	*slash;
	char		*dir;

	if (*value == '\0') {
		config_error(p, line, "empty value for 'access_log'");
		return;
	}
	if (strcmp(value, "-") == 0 || strcmp(value, "off") == 0)
		goto set;
	if (stat(value, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			errno = EISDIR;
		else if (access(value, W_OK) == 0)
			goto set;
		config_error(p, line, "cannot write access_log '%s': %s",
		    value, strerror(errno));
		return;
	}
	if (errno != ENOENT) {
		config_error(p, line, "cannot write access_log '%s': %s",
		    value, strerror(errno));
		return;
	}
	if ((slash = strrchr(value, '/')) == NULL)
		dir = parse_strndup(p, ".", 1);
	else if (slash == value)
		dir = parse_strndup(p, "/", 1);
	else
		dir = parse_strndup(p, value, (size_t)(slash - value));
	if (dir == NULL)
		return;
	if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
		errno = ENOTDIR;
	else if (access(dir, W_OK|X_OK) == 0) {
		free(dir);
		goto set;
	}
	config_error(p, line, "cannot create access_log '%s' in '%s': %s",
	    value, dir, strerror(errno));
	free(dir);
	return;
set:
	*v = parse_strndup(p, value, strlen(value));
}

static void
config_set(struct parse *p, struct section *sec, const struct config_key *k,
    const char *value, int line)
{
	struct upstream_conf	*u;
	void			*ptr = (char *)sec->base + k->off;
	char			 lo[32], hi[32];
	const char		*end, *why;
	uint64_t		 v;
	int			 b;

	switch (k->type) {
	case KEY_LISTEN:
		config_set_listen(p, sec, value, line);
		break;
	case KEY_UINT:
		if (parse_digits(value, &v, &end) != 0 || *end != '\0') {
			config_error(p, line, "bad number '%s' for '%s'", value,
			    k->name);
			break;
		}
		if (v < k->min || v > k->max) {
			config_error(p, line, "'%s' out of range: '%s' "
			    "(%llu to %llu)", k->name, value,
			    (unsigned long long)k->min,
			    (unsigned long long)k->max);
			break;
		}
		*(unsigned *)ptr = (unsigned)v;
		break;
	case KEY_DURATION:
		if (config_parse_duration(value, &v) != 0) {
			config_error(p, line, "bad duration '%s' for '%s' "
			    "(use ms, s, m or h)", value, k->name);
			break;
		}
		if (v < k->min || v > k->max) {
			duration_text(k->min, lo, sizeof lo);
			duration_text(k->max, hi, sizeof hi);
			config_error(p, line, "'%s' out of range: '%s' "
			    "(%s to %s)", k->name, value, lo, hi);
			break;
		}
		*(uint64_t *)ptr = v;
		break;
	case KEY_SIZE:
		if (config_parse_size(value, &v) != 0) {
			config_error(p, line, "bad size '%s' for '%s' "
			    "(use a number, optionally with k, m or g)", value,
			    k->name);
			break;
		}
		if (v < k->min || v > k->max) {
			size_text(k->min, lo, sizeof lo);
			size_text(k->max, hi, sizeof hi);
			config_error(p, line, "'%s' out of range: '%s' "
			    "(%s to %s)", k->name, value, lo, hi);
			break;
		}
		*(uint64_t *)ptr = v;
		break;
	case KEY_BOOL:
		if (parse_bool(value, &b) != 0) {
			config_error(p, line, "bad boolean '%s' for '%s' "
			    "(use yes or no)", value, k->name);
			break;
		}
		*(int *)ptr = b;
		break;
	case KEY_CHOICE:
		/* The enums of config.h hold their choices' indices. */
		config_set_choice(p, k, ptr, value, line);
		break;
	case KEY_STRING:
		if (*value == '\0') {
			config_error(p, line, "empty value for '%s'", k->name);
			break;
		}
		*(char **)ptr = parse_strndup(p, value, strlen(value));
		break;
	case KEY_LOG:
		config_set_log(p, ptr, value, line);
		break;
	case KEY_FILE:
		config_set_file(p, k, ptr, value, line);
		break;
	case KEY_CIPHERS:
		if (*value == '\0')
			break;		/* "tls_ciphers =": the default */
		if (tls_ciphers_check(value) != 0) {
			config_error(p, line, "bad tls_ciphers '%s' (no cipher "
			    "suite that OpenSSL knows)", value);
			break;
		}
		*(char **)ptr = parse_strndup(p, value, strlen(value));
		break;
	case KEY_URL:
		u = sec->base;
		if (url_parse(value, &u->url, &u->host_header, &why) != 0) {
			if (why == NULL)
				p->oom = 1;
			else
				config_error(p, line, "bad url '%s' (%s)",
				    value, why);
		}
		break;
	case KEY_MATCH:
		if (!match_valid(value)) {
			config_error(p, line, "bad match '%s' (a path starting "
			    "with '/', without '?', '#' or spaces)", value);
			break;
		}
		*(char **)ptr = parse_strndup(p, value, strlen(value));
		break;
	case KEY_METHODS:
		config_set_methods(p, ptr, value, line);
		break;
	case KEY_NAMES:
		/* Upstreams may be defined further down: resolved later. */
		sec->names = parse_strndup(p, value, strlen(value));
		break;
	case KEY_SERVERS:
		config_set_servers(p, sec->base, value, line);
		break;
	case KEY_SHARE:
		config_set_share(p, k, ptr, value, line, 0);
		break;
	case KEY_PERCENT: {
		struct config_share	sh = { 0, 0 };

		config_set_share(p, k, &sh, value, line, 1);
		*(unsigned *)ptr = sh.n;
		break;
	}
	case KEY_CHECK:
		if (strcmp(value, "off") == 0)
			break;
		if (!match_valid(value)) {
			config_error(p, line, "bad health_check '%s' (off, or "
			    "a path starting with '/', without '?', '#' or "
			    "spaces)",
			    value);
			break;
		}
		*(char **)ptr = parse_strndup(p, value, strlen(value));
		break;
	}
}

static void
config_key(struct parse *p, const char *name, const char *value, int line)
{
	struct section	*sec = p->cur;
	size_t		 n;
	int		 i;

	if (sec == NULL) {
		config_error(p, line, "key '%s' outside of any section", name);
		return;
	}
	if (sec->type == SECTION_IGNORE)
		return;
	if ((i = config_key_index(section_names[sec->type], name)) == -1) {
		config_error(p, line, "unknown key '%s' in %s", name,
		    sec->label);
		return;
	}
	if (sec->seen[i] != 0) {
		config_error(p, line, "duplicate key '%s' in %s (first at "
		    "line %d)", name, sec->label, sec->seen[i]);
		return;
	}
	sec->seen[i] = line;
	n = p->nerrors;
	config_set(p, sec, &config_keys[i], value, line);
	sec->bad[i] = (p->nerrors != n);
}

#if INI_HANDLER_LINENO
static int
config_handler(void *arg, const char *section, const char *name,
    const char *value, int lineno)
{
	struct parse	*p = arg;

	(void)section;
	(void)lineno;
	config_key(p, name, value, p->lineno);
	return (1);
}
#else
static int
config_handler(void *arg, const char *section, const char *name,
    const char *value)
{
	struct parse	*p = arg;

	(void)section;
	config_key(p, name, value, p->lineno);
	return (1);
}
#endif

static struct section *
section_new(struct parse *p, enum section_type type, int line)
{
	struct section	**sections, *sec;

	sections = reallocarray(p->sections, p->nsections + 1,
	    sizeof *p->sections);
	if (sections == NULL)
		goto fail;
	p->sections = sections;
	if ((sec = calloc(1, sizeof *sec)) == NULL)
		goto fail;
	sec->type = type;
	sec->line = line;
	sec->base = p->cfg;
	p->sections[p->nsections++] = sec;
	return (sec);

fail:
	p->oom = 1;
	return (NULL);
}

static int
name_valid(const char *s, size_t len)
{
	size_t	i;

	if (len < 1 || len > CONFIG_NAME_MAX)
		return (0);
	for (i = 0; i < len; i++) {
		if (!host_char((unsigned char)s[i]))
			return (0);
	}
	return (1);
}

/* The upstream or route section named NAME, or NULL. */
static struct section *
section_find(struct parse *p, enum section_type type, const char *name,
    size_t len)
{
	struct section	*sec;
	size_t		 i;

	for (i = 0; i < p->nsections; i++) {
		sec = p->sections[i];
		if (sec->type == type && strlen(sec->name) == len &&
		    memcmp(sec->name, name, len) == 0)
			return (sec);
	}
	return (NULL);
}

static void
section_named(struct parse *p, enum section_type type, const char *name,
    size_t len, int line)
{
	struct config		*cfg = p->cfg;
	struct section		*sec, *first;
	struct upstream_conf	*u = NULL, **ua;
	struct route_conf	*r = NULL, **ra;
	void			*base;
	const char		*what = section_names[type];
	char			*cp;

	if (!name_valid(name, len)) {
		config_error(p, line, "bad %s name '%.*s' (1 to %d letters, "
		    "digits, '_', '.' or '-')", what, (int)len, name,
		    CONFIG_NAME_MAX);
		goto ignore;
	}
	if ((first = section_find(p, type, name, len)) != NULL) {
		config_error(p, line, "duplicate %s '%.*s' (first at line %d)",
		    what, (int)len, name, first->line);
		goto ignore;
	}
	if ((cp = parse_strndup(p, name, len)) == NULL)
		goto ignore;

	/* Into the config at once, so that config_free finds it. */
	if (type == SECTION_UPSTREAM) {
		if ((u = calloc(1, sizeof *u)) == NULL || (ua = reallocarray(
		    cfg->upstreams, cfg->nupstreams + 1, sizeof *ua)) == NULL) {
			free(u);
			free(cp);
			goto oom;
		}
		cfg->upstreams = ua;
		cfg->upstreams[cfg->nupstreams++] = u;
		u->name = cp;
		u->line = line;
		base = u;
	} else {
		if ((r = calloc(1, sizeof *r)) == NULL || (ra = reallocarray(
		    cfg->routes, cfg->nroutes + 1, sizeof *ra)) == NULL) {
			free(r);
			free(cp);
			goto oom;
		}
		cfg->routes = ra;
		cfg->routes[cfg->nroutes++] = r;
		r->name = cp;
		r->line = line;
		base = r;
	}
	if ((sec = section_new(p, type, line)) == NULL)
		return;
	sec->base = base;
	sec->name = cp;
	snprintf(sec->label, sizeof sec->label, "[%s \"%s\"]", what, cp);
	p->cur = sec;
	return;

oom:
	p->oom = 1;
ignore:
	p->cur = section_new(p, SECTION_IGNORE, line);
}

/* A section header, "[" at s; e is the end of the line without blanks. */
static void
section_header(struct parse *p, const char *s, const char *e)
{
	const char	*close, *in, *inend, *word, *rest;
	struct section	**first, *sec;
	size_t		 wlen;
	int		 line = p->lineno, type;

	if ((close = memchr(s, ']', (size_t)(e - s))) == NULL) {
		config_error(p, line, "syntax error: missing ']'");
		goto ignore;
	}
	for (rest = close + 1; rest < e; rest++) {
		if (*rest == ';' || *rest == '#')
			break;
		if (*rest != ' ' && *rest != '\t') {
			config_error(p, line, "syntax error: unexpected text "
			    "after ']'");
			goto ignore;
		}
	}

	for (in = s + 1; in < close && (*in == ' ' || *in == '\t'); in++)
		;
	for (inend = close; inend > in &&
	    (inend[-1] == ' ' || inend[-1] == '\t'); inend--)
		;
	word = in;
	wlen = strcspn(word, " \t\"]");
	rest = word + wlen;
	while (rest < inend && (*rest == ' ' || *rest == '\t'))
		rest++;

	for (type = 0; section_names[type] != NULL; type++) {
		if (strlen(section_names[type]) == wlen &&
		    memcmp(section_names[type], word, wlen) == 0)
			break;
	}
	switch (type) {
	case SECTION_SERVER:
	case SECTION_ADMIN:
		if (rest != inend)
			break;
		first = (type == SECTION_SERVER) ? &p->server : &p->admin;
		if (*first != NULL) {
			config_error(p, line, "duplicate section [%s] (first "
			    "at line %d)", section_names[type], (*first)->line);
			goto ignore;
		}
		if ((sec = section_new(p, type, line)) == NULL)
			return;
		snprintf(sec->label, sizeof sec->label, "[%s]",
		    section_names[type]);
		*first = p->cur = sec;
		return;
	case SECTION_UPSTREAM:
	case SECTION_ROUTE:
		if (type == SECTION_ROUTE)
			p->nroutes++;
		if (inend - rest < 2 || *rest != '"' || inend[-1] != '"' ||
		    memchr(rest + 1, '"', (size_t)(inend - rest - 2)) != NULL) {
			config_error(p, line, "section [%.*s] needs a quoted "
			    "name, as in [%s \"NAME\"]", (int)(inend - in), in,
			    section_names[type]);
			goto ignore;
		}
		section_named(p, type, rest + 1, (size_t)(inend - rest - 2),
		    line);
		return;
	}
	config_error(p, line, "unknown section [%.*s]", (int)(inend - in), in);

ignore:
	p->cur = section_new(p, SECTION_IGNORE, line);
}

static int
blank(int c)
{
	return (c == ' ' || c == '\t' || c == '\f' || c == '\v' || c == '\r');
}

/*
 * inih's find_chars_or_comment: the first of chars (none when NULL), or of
 * an inline comment, ';' or '#' after a blank. inih knows ';' only; the
 * reader cuts a '#' comment off before inih sees the line.
 */
static const char *
find_chars_or_comment(const char *s, const char *e, const char *chars)
{
	int	was_space = 0;

	for (; s < e; s++) {
		if (chars != NULL && strchr(chars, *s) != NULL)
			break;
		if (was_space && (*s == ';' || *s == '#'))
			break;
		was_space = blank((unsigned char)*s);
	}
	return (s);
}

/* The limit the library's line buffer (num bytes) sets on a line. */
static size_t
line_max(int num)
{
	/* Room for "\r\n" and the NUL, as inih's ini.h asks. */
	return ((size_t)num - 3);
}

static char *
config_reader(char *str, int num, void *arg)
{
	struct parse	*p = arg;
	const char	*line, *nl, *s, *e, *sep;
	size_t		 len;

	if (p->pos >= p->end || num < 4)
		return (NULL);
	line = p->pos;
	if ((nl = memchr(line, '\n', (size_t)(p->end - line))) != NULL) {
		len = (size_t)(nl - line);
		p->pos = nl + 1;
	} else {
		len = (size_t)(p->end - line);
		p->pos = p->end;
	}
	p->lineno++;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (p->lineno == 1 && len >= 3 &&
	    memcmp(line, "\xef\xbb\xbf", 3) == 0) {
		line += 3;
		len -= 3;
	}

	/* What inih sees of any line handled here. */
	str[0] = '\n';
	str[1] = '\0';

	s = line;
	e = line + len;
	while (s < e && blank((unsigned char)*s))
		s++;
	if (len > line_max(num)) {
		config_error(p, p->lineno, "line too long (more than %zu "
		    "characters)", line_max(num));
		/* Keep the keys below it out of the section above it. */
		if (s < e && *s == '[')
			p->cur = section_new(p, SECTION_IGNORE, p->lineno);
		return (str);
	}
	if (memchr(line, '\0', len) != NULL) {
		config_error(p, p->lineno, "NUL character in line");
		return (str);
	}
	while (e > s && blank((unsigned char)e[-1]))
		e--;
	if (s == e || *s == ';' || *s == '#')
		return (str);
	if (*s == '[') {
		section_header(p, s, e);
		return (str);
	}
	sep = find_chars_or_comment(s, e, "=:");
	if (sep == e || (*sep != '=' && *sep != ':') || sep == s) {
		config_error(p, p->lineno, "syntax error: expected "
		    "'key = value'");
		return (str);
	}
	/* As inih scans a value: from just after the '=', not its blanks. */
	e = find_chars_or_comment(sep + 1, e, NULL);
	while (e > sep + 1 && blank((unsigned char)e[-1]))
		e--;
	memcpy(str, s, (size_t)(e - s));
	str[e - s] = '\n';
	str[e - s + 1] = '\0';
	return (str);
}

static void
config_defaults(struct parse *p, struct section *sec)
{
	const struct config_key	*k;
	size_t			 i;

	for (i = 0; i < NKEYS; i++) {
		k = &config_keys[i];
		if (strcmp(k->section, section_names[sec->type]) != 0 ||
		    sec->seen[i] != 0)
			continue;
		if (k->flags & KEY_REQUIRED)
			config_error(p, sec->line, "missing key '%s' in %s",
			    k->name, sec->label);
		else if (k->dflt != NULL)
			config_set(p, sec, k, k->dflt, sec->line);
	}
}

static void
config_resolve_route(struct parse *p, struct section *sec)
{
	struct route_conf	*r = sec->base;
	struct section		*us;
	const char		*list, *item;
	size_t			 len, n, i;
	int			 line, qi;

	if (sec->names == NULL)
		return;		/* missing or out of memory */
	line = sec->seen[config_key_index("route", "upstreams")];

	n = 0;
	list = sec->names;
	while (list_next(&list, &item, &len))
		n++;
	if ((r->upstreams = calloc(n, sizeof *r->upstreams)) == NULL) {
		p->oom = 1;
		return;
	}

	list = sec->names;
	while (list_next(&list, &item, &len)) {
		if (len == 0) {
			config_error(p, line, "empty item in 'upstreams'");
			continue;
		}
		us = section_find(p, SECTION_UPSTREAM, item, len);
		if (us == NULL) {
			config_error(p, line, "route '%s' names unknown "
			    "upstream '%.*s'", r->name, (int)len, item);
			continue;
		}
		for (i = 0; i < r->nupstreams; i++) {
			if (r->upstreams[i] == us->base)
				break;
		}
		if (i != r->nupstreams) {
			config_error(p, line, "route '%s' lists upstream "
			    "'%.*s' twice", r->name, (int)len, item);
			continue;
		}
		r->upstreams[r->nupstreams++] = us->base;
	}

	qi = config_key_index("route", "quorum");
	if (sec->seen[qi] == 0)
		r->quorum = (unsigned)(n / 2 + 1);
	else if (!sec->bad[qi] && r->quorum > n) {
		config_error(p, sec->seen[qi], "'quorum' out of range: '%u' "
		    "(1 to %zu)", r->quorum, n);
		sec->bad[qi] = 1;
	}
}

/* Both would bind the same address. */
static void
config_check_admin(struct parse *p)
{
	struct config	*cfg = p->cfg;
	size_t		 i, j;
	int		 line;

	line = p->admin->seen[config_key_index("admin", "listen")];
	if (line == 0)
		line = p->server->seen[config_key_index("server", "listen")];
	for (i = 0; i < cfg->nadmin_listen; i++) {
		for (j = 0; j < cfg->nlisten; j++) {
			if (listen_same(&cfg->admin_listen[i], &cfg->listen[j]))
				config_error(p, line, "listen address '%s' is "
				    "used by both [server] and [admin]",
				    cfg->admin_listen[i].text);
		}
	}
}

/*
 * A tls address needs a certificate and a key, and they must load: the
 * context is built here, so that -t and a reload find what start-up would.
 */
static void
config_check_tls(struct parse *p)
{
	struct config	*cfg = p->cfg;
	size_t		 i, ntls = 0;
	char		 err[512];
	int		 lcert, lkey, llisten, lciphers, lversion;

	lcert = p->server->seen[config_key_index("server", "tls_cert")];
	lkey = p->server->seen[config_key_index("server", "tls_key")];
	llisten = p->server->seen[config_key_index("server", "listen")];
	/* "tls_ciphers =" asks for the default: nothing to warn about. */
	lciphers = cfg->tls_ciphers == NULL ? 0 :
	    p->server->seen[config_key_index("server", "tls_ciphers")];
	i = (size_t)config_key_index("server", "tls_min_version");
	lversion = p->server->bad[i] ? 0 : p->server->seen[i];
	for (i = 0; i < cfg->nlisten; i++)
		ntls += cfg->listen[i].tls;
	if (ntls == 0) {
		if (lciphers != 0)
			config_warning(p, lciphers, "key 'tls_ciphers' has no "
			    "effect without a listen address with 'tls'");
		if (lversion != 0)
			config_warning(p, lversion, "key 'tls_min_version' has "
			    "no effect without a listen address with 'tls'");
	} else if (lciphers != 0 && cfg->tls_min_version == TLS_MIN_1_3)
		config_warning(p, lciphers, "key 'tls_ciphers' has no effect "
		    "with tls_min_version = 1.3");

	if (p->server->bad[config_key_index("server", "tls_cert")] ||
	    p->server->bad[config_key_index("server", "tls_key")] ||
	    p->server->bad[config_key_index("server", "tls_ciphers")])
		return;		/* reported already */
	if (ntls == 0) {
		if (cfg->tls_cert != NULL || cfg->tls_key != NULL)
			config_error(p, lcert ? lcert : lkey, "tls_cert and "
			    "tls_key need a listen address with 'tls'");
		return;
	}
	if (cfg->tls_cert == NULL || cfg->tls_key == NULL) {
		config_error(p, llisten, "a listen address with 'tls' needs "
		    "tls_cert and tls_key");
		return;
	}
	cfg->tls_ctx = tls_ctx_new(cfg->tls_cert, cfg->tls_key, cfg->http2,
	    cfg->tls_ciphers, cfg->tls_min_version == TLS_MIN_1_3, err,
	    sizeof err);
	if (cfg->tls_ctx == NULL)
		config_error(p, strstr(err, "tls_key") != NULL ? lkey : lcert,
		    "%s", err);
}

/*
 * Smooth weighted round robin, laid out once: each turn goes to the server
 * whose running credit is highest, which then pays the sum of the weights
 * back. Weights 5, 1, 1 give a a b a c a a: every server gets its share,
 * spread out, and no server is hit weight times in a row.
 */
static int
upstream_turns(struct upstream_conf *u)
{
	long	credit[UPSTREAM_SERVERS_MAX];
	size_t	i, t, best;
	long	total = 0;

	for (i = 0; i < u->nservers; i++) {
		credit[i] = 0;
		total += u->servers[i].weight;
	}
	if ((u->turns = calloc((size_t)total, sizeof *u->turns)) == NULL)
		return (-1);
	u->nturns = (size_t)total;
	for (t = 0; t < u->nturns; t++) {
		best = 0;
		for (i = 0; i < u->nservers; i++) {
			credit[i] += u->servers[i].weight;
			if (credit[i] > credit[best])
				best = i;
		}
		credit[best] -= total;
		u->turns[t] = (unsigned short)best;
	}
	return (0);
}

static void
config_check_upstream(struct parse *p, struct section *sec)
{
	struct upstream_conf	*u = sec->base;
	int			 line, lurl, lservers;
	unsigned		 n;
	char			 lo[32], hi[32];

	lurl = sec->seen[config_key_index("upstream", "url")];
	lservers = sec->seen[config_key_index("upstream", "servers")];
	if (lurl != 0 && lservers != 0)
		config_error(p, lurl > lservers ? lurl : lservers, "'url' and "
		    "'servers' both given in %s (use one)", sec->label);
	else if (lurl == 0 && lservers == 0)
		config_error(p, sec->line, "missing key 'url' in %s",
		    sec->label);
	else if (lurl != 0 && u->url != NULL) {
		/* url is the one-server case of servers. */
		if ((u->servers = calloc(1, sizeof *u->servers)) == NULL ||
		    (u->servers[0].url = strdup(u->url)) == NULL) {
			p->oom = 1;
			return;
		}
		u->servers[0].weight = 1;
		u->nservers = 1;
	} else if (lservers != 0 && u->nservers > 0) {
		if ((u->url = strdup(u->servers[0].url)) == NULL) {
			p->oom = 1;
			return;
		}
	}
	if (u->nservers > 0 && upstream_turns(u) == -1) {
		p->oom = 1;
		return;
	}
	if (u->eject_time_max_ms < u->eject_time_ms) {
		line = sec->seen[config_key_index("upstream", "eject_time_max")];
		if (line == 0)
			line = sec->seen[config_key_index("upstream",
			    "eject_time")];
		duration_text(u->eject_time_max_ms, lo, sizeof lo);
		duration_text(u->eject_time_ms, hi, sizeof hi);
		config_error(p, line, "'eject_time_max' (%s) is below "
		    "'eject_time' (%s)", lo, hi);
	}
	/* At least one may go, whatever the share (as Envoy does): a
	 * one-server upstream is a circuit breaker. */
	n = u->max_ejected_share.n;
	if (u->max_ejected_share.percent) {
		n = (unsigned)((u->nservers * n) / 100);
		if (n < 1)
			n = 1;
	}
	u->max_ejected = n;

	if (u->http2 != HTTP2_ON || u->url == NULL ||
	    strncasecmp(u->url, "https://", 8) == 0)
		return;
	line = sec->seen[config_key_index("upstream", "http2")];
	config_error(p, line, "http2 = on needs an https:// url "
	    "(use prior-knowledge for h2c)");
}

/*
 * A key the route's mode never reads: most likely the mode is not the one
 * meant, or the key was left from an earlier one. Not an error, as a mode
 * may be switched back and forth while the keys stay.
 */
static void
config_check_mode_keys(struct parse *p, struct section *sec)
{
#define M(m)	(1u << (m))
	static const struct {
		const char	*key;
		unsigned	 modes;
		const char	*which;
	} keys[] = {
		{ "hedge_delay", M(MODE_HEDGE), "mode hedge" },
		{ "quorum", M(MODE_QUORUM), "mode quorum" },
		{ "partial", M(MODE_ALL), "mode all" },
		{ "repeat_unsafe", M(MODE_FIRST) | M(MODE_HEDGE) | M(MODE_QUORUM),
		  "modes first, hedge and quorum" },
		{ "budget", M(MODE_PROXY) | M(MODE_HEDGE),
		  "modes proxy and hedge" },
		{ "budget_min", M(MODE_PROXY) | M(MODE_HEDGE),
		  "modes proxy and hedge" },
	};
#undef M
	struct route_conf	*r = sec->base;
	size_t			 i;
	int			 ki;

	if (sec->bad[config_key_index("route", "mode")])
		return;
	for (i = 0; i < nitems(keys); i++) {
		ki = config_key_index("route", keys[i].key);
		if (sec->seen[ki] == 0 || sec->bad[ki] ||
		    (keys[i].modes & (1u << r->mode)))
			continue;
		config_warning(p, sec->seen[ki], "key '%s' has no effect in "
		    "mode %s (route '%s'; it is for %s)", keys[i].key,
		    config_mode_name(r->mode), r->name, keys[i].which);
	}
}

/*
 * An upstream's keys that another of its keys turns off: the checks'
 * without health_check, ejection's with eject_after = 0, balance with one
 * server. Warnings, as for a route's mode.
 */
static void
config_check_upstream_keys(struct parse *p, struct section *sec)
{
	static const struct {
		const char	*key;
		int		 why;	/* index in because[] */
	} keys[] = {
		{ "health_interval", 0 }, { "health_timeout", 0 },
		{ "health_rise", 0 }, { "health_fall", 0 },
		{ "eject_time", 1 }, { "eject_time_max", 1 },
		{ "max_ejected", 1 },
		{ "balance", 2 },
	};
	static const char *const because[] = {
		"without health_check", "with eject_after = 0",
		"with one server",
	};
	struct upstream_conf	*u = sec->base;
	size_t			 i;
	int			 ki, off;

	for (i = 0; i < nitems(keys); i++) {
		ki = config_key_index("upstream", keys[i].key);
		if (sec->seen[ki] == 0 || sec->bad[ki])
			continue;
		switch (keys[i].why) {
		case 0:
			off = u->health_check == NULL &&
			    !sec->bad[config_key_index("upstream",
			    "health_check")];
			break;
		case 1:
			off = u->eject_after == 0;
			break;
		default:
			off = u->nservers == 1;
			break;
		}
		if (off)
			config_warning(p, sec->seen[ki], "key '%s' has no effect "
			    "%s (upstream '%s')", keys[i].key, because[keys[i].why],
			    u->name);
	}
}

/* Two routes with one prefix: config_find_route could pick only one. */
static void
config_check_match(struct parse *p, size_t idx)
{
	struct section		*sec = p->sections[idx], *other;
	struct route_conf	*r = sec->base, *o;
	size_t			 i;
	int			 mi;

	if (r->match == NULL)
		return;
	mi = config_key_index("route", "match");
	for (i = 0; i < idx; i++) {
		other = p->sections[i];
		if (other->type != SECTION_ROUTE)
			continue;
		o = other->base;
		if (o->match == NULL || strcmp(o->match, r->match) != 0)
			continue;
		config_error(p, sec->seen[mi], "duplicate match '%s' (first "
		    "in route '%s' at line %d)", r->match, o->name,
		    other->seen[mi]);
		return;
	}
}

static void
config_resolve(struct parse *p)
{
	struct config	*cfg = p->cfg;
	struct section	*sec;
	size_t		 i;
	long		 ncpu;

	if (p->server == NULL) {
		if ((p->server = section_new(p, SECTION_SERVER, 0)) == NULL)
			return;
		snprintf(p->server->label, sizeof p->server->label, "[server]");
	}
	if (p->admin == NULL) {
		if ((p->admin = section_new(p, SECTION_ADMIN, 0)) == NULL)
			return;
		snprintf(p->admin->label, sizeof p->admin->label, "[admin]");
	}
	for (i = 0; i < p->nsections; i++) {
		if (p->sections[i]->type != SECTION_IGNORE)
			config_defaults(p, p->sections[i]);
	}
	config_check_admin(p);
	config_check_tls(p);

	for (i = 0; i < p->nsections; i++) {
		sec = p->sections[i];
		if (sec->type == SECTION_UPSTREAM) {
			config_check_upstream(p, sec);
			config_check_upstream_keys(p, sec);
		}
		else if (sec->type == SECTION_ROUTE) {
			config_resolve_route(p, sec);
			config_check_match(p, i);
			config_check_mode_keys(p, sec);
		}
	}
	/*
	 * Every request would be a 404: an empty file, or one of comments
	 * only, is a mistake. Said only when nothing else is wrong, since a
	 * [route] header with an error is reported as itself.
	 */
	if (p->nroutes == 0 && !config_failed(p))
		config_error(p, 0, "no [route] section: nothing to serve");

	if (cfg->workers == 0) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		if (ncpu < 1)
			ncpu = 1;
		cfg->workers = (ncpu > 1024) ? 1024 : (unsigned)ncpu;
	}
}

static int
route_cmp(const void *a, const void *b)
{
	const struct route_conf	*ra = *(struct route_conf *const *)a;
	const struct route_conf	*rb = *(struct route_conf *const *)b;
	size_t			 la = strlen(ra->match), lb = strlen(rb->match);

	if (la != lb)
		return (la > lb ? -1 : 1);
	return (ra->line - rb->line);
}

static int
error_cmp(const void *a, const void *b)
{
	const struct config_error	*ea = a, *eb = b;

	if (ea->line != eb->line)
		return (ea->line < eb->line ? -1 : 1);
	return (ea->seq < eb->seq ? -1 : (ea->seq > eb->seq));
}

/* All errors as one text, "FILE:LINE: message\n" each, NULL if no memory. */
static char *
config_error_text(struct parse *p)
{
	struct config_error	*e;
	size_t			 i, len = 0, off = 0;
	char			*text;
	int			 n;

	if (p->oom) {
		len = strlen(p->file) + sizeof ": out of memory\n";
		if ((text = malloc(len)) != NULL)
			snprintf(text, len, "%s: out of memory\n", p->file);
		return (text);
	}
	if (p->nerrors > 1)
		qsort(p->errors, p->nerrors, sizeof *p->errors, error_cmp);
	for (i = 0; i < p->nerrors; i++) {
		e = &p->errors[i];
		len += strlen(p->file) + strlen(e->msg) + 16;
	}
	if ((text = malloc(len + 1)) == NULL)
		return (NULL);
	text[0] = '\0';
	for (i = 0; i < p->nerrors; i++) {
		e = &p->errors[i];
		if (e->line > 0)
			n = snprintf(text + off, len + 1 - off, "%s:%d: %s\n",
			    p->file, e->line, e->msg);
		else
			n = snprintf(text + off, len + 1 - off, "%s: %s\n",
			    p->file, e->msg);
		off += (size_t)n;
	}
	return (text);
}

/* ---- what outlives a configuration -------------------------------------- */

/*
 * The registry of server and route states, shared by every configuration
 * alive (see config.h). Loads take references on the main thread; the last
 * configuration of a state may go on any worker, hence the lock.
 */
static pthread_mutex_t		 state_lock = PTHREAD_MUTEX_INITIALIZER;
static struct state_entry	*server_states;
static struct state_entry	*route_states;

/* The entry of list under key with one more reference, or a new one of
 * size bytes, zeroed. NULL if out of memory. */
static struct state_entry *
state_get(struct state_entry **list, const char *key, size_t size)
{
	struct state_entry	*e;

	pthread_mutex_lock(&state_lock);
	for (e = *list; e != NULL; e = e->next) {
		if (strcmp(e->key, key) == 0) {
			e->refs++;
			break;
		}
	}
	if (e == NULL && (e = calloc(1, size)) != NULL) {
		if ((e->key = strdup(key)) == NULL) {
			free(e);
			e = NULL;
		} else {
			e->refs = 1;
			pthread_mutex_init(&e->lock, NULL);
			e->next = *list;
			*list = e;
		}
	}
	pthread_mutex_unlock(&state_lock);
	return (e);
}

static void
state_put(struct state_entry **list, struct state_entry *e)
{
	struct state_entry	**pp;

	if (e == NULL)
		return;
	pthread_mutex_lock(&state_lock);
	if (--e->refs > 0) {
		pthread_mutex_unlock(&state_lock);
		return;
	}
	for (pp = list; *pp != e; pp = &(*pp)->next)
		;
	*pp = e->next;
	pthread_mutex_unlock(&state_lock);
	pthread_mutex_destroy(&e->lock);
	free(e->key);
	free(e);
}

static void
state_put_server(struct server_state *st)
{
	state_put(&server_states, st != NULL ? &st->entry : NULL);
}

static void
state_put_route(struct route_state *st)
{
	state_put(&route_states, st != NULL ? &st->entry : NULL);
}

/* A whole configuration takes its states: those alive are shared. */
static int
config_bind_states(struct config *cfg)
{
	struct upstream_conf	*u;
	size_t			 i, j;

	char			*key;

	for (i = 0; i < cfg->nupstreams; i++) {
		u = cfg->upstreams[i];
		for (j = 0; j < u->nservers; j++) {
			/* A space: in neither a name nor a URL. */
			if (asprintf(&key, "%s %s", u->name,
			    u->servers[j].url) == -1)
				return (-1);
			u->servers[j].st = (struct server_state *)state_get(
			    &server_states, key, sizeof *u->servers[j].st);
			free(key);
			if (u->servers[j].st == NULL)
				return (-1);
		}
	}
	for (i = 0; i < cfg->nroutes; i++) {
		cfg->routes[i]->st = (struct route_state *)state_get(
		    &route_states, cfg->routes[i]->name,
		    sizeof *cfg->routes[i]->st);
		if (cfg->routes[i]->st == NULL)
			return (-1);
	}
	return (0);
}

static void
config_free(struct config *cfg)
{
	struct upstream_conf	*u;
	struct route_conf	*r;
	size_t			 i, j;

	if (cfg == NULL)
		return;
	for (i = 0; i < cfg->nupstreams; i++) {
		u = cfg->upstreams[i];
		free(u->name);
		free(u->url);
		free(u->host_header);
		free(u->ca_file);
		for (j = 0; j < u->nservers; j++) {
			state_put_server(u->servers[j].st);
			free(u->servers[j].url);
		}
		free(u->servers);
		free(u->turns);
		free(u->health_check);
		free(u);
	}
	free(cfg->upstreams);
	for (i = 0; i < cfg->nroutes; i++) {
		r = cfg->routes[i];
		state_put_route(r->st);
		free(r->name);
		free(r->match);
		free(r->upstreams);
		free(r);
	}
	free(cfg->routes);
	free(cfg->access_log);
	free(cfg->tls_cert);
	free(cfg->tls_key);
	free(cfg->tls_ciphers);
	tls_ctx_free(cfg->tls_ctx);
	free(cfg->warnings);
	free(cfg->path);
	free(cfg);
}

static void
parse_free(struct parse *p)
{
	size_t	i;

	for (i = 0; i < p->nsections; i++) {
		free(p->sections[i]->names);
		free(p->sections[i]);
	}
	free(p->sections);
	for (i = 0; i < p->nerrors; i++)
		free(p->errors[i].msg);
	free(p->errors);
}

/*
 * Debian's libinih takes its line buffer size at run time; upstream's is
 * fixed when the library is built (200 bytes by default), whatever
 * INI_MAX_LINE says here. The reader reports lines that do not fit either
 * way. Loads happen on the main thread only, so the globals are safe.
 */
static void
config_inih_setup(void)
{
#if defined(HAVE_DECL_INI_MAX_LINE) && HAVE_DECL_INI_MAX_LINE
	ini_use_stack = 0;
	ini_allow_realloc = 0;
	ini_initial_alloc = CONFIG_LINE_MAX + 3;
	ini_max_line = CONFIG_LINE_MAX + 3;
	ini_allow_multiline = 0;
#endif
}

static struct config *
config_parse(const char *file, const char *text, size_t len, char **errors,
    const char *fatal)
{
	struct parse	 p;
	struct config	*cfg = NULL;
	int		 rc;

	memset(&p, 0, sizeof p);
	p.file = file;
	p.pos = text;
	p.end = text + len;
	if (errors != NULL)
		*errors = NULL;

	if (fatal != NULL) {
		config_error(&p, 0, "%s", fatal);
		goto fail;
	}
	if ((cfg = calloc(1, sizeof *cfg)) == NULL ||
	    (cfg->path = strdup(file)) == NULL) {
		p.oom = 1;
		goto fail;
	}
	cfg->refs = 1;
	p.cfg = cfg;

	config_inih_setup();
	rc = ini_parse_stream(config_reader, &p, config_handler, &p);
	if (rc == -2)
		p.oom = 1;
	else if (rc > 0 && p.nerrors == 0)
		config_error(&p, rc, "syntax error");
	if (p.oom)
		goto fail;
	config_resolve(&p);
	if (config_failed(&p))
		goto fail;
	/* Only warnings are left: they go with the config. */
	if (p.nerrors != 0 && (cfg->warnings = config_error_text(&p)) == NULL) {
		p.oom = 1;
		goto fail;
	}

	if (cfg->nroutes > 1)
		qsort(cfg->routes, cfg->nroutes, sizeof *cfg->routes,
		    route_cmp);
	if (config_bind_states(cfg) == -1) {
		p.oom = 1;
		goto fail;
	}
	parse_free(&p);
	return (cfg);

fail:
	if (errors != NULL)
		*errors = config_error_text(&p);
	parse_free(&p);
	config_free(cfg);
	return (NULL);
}

struct config *
config_load_string(const char *name, const char *text, char **errors)
{
	return (config_parse(name, text, strlen(text), errors, NULL));
}

struct config *
config_load(const char *path, char **errors)
{
	struct config	*cfg;
	FILE		*f;
	char		*buf = NULL, *nbuf, msg[256];
	size_t		 len = 0, size = 0, n;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(msg, sizeof msg, "cannot open: %s", strerror(errno));
		return (config_parse(path, "", 0, errors, msg));
	}
	for (;;) {
		if (len == size) {
			if (size > CONFIG_FILE_MAX) {
				snprintf(msg, sizeof msg, "file too large "
				    "(more than %dm)", CONFIG_FILE_MAX >> 20);
				goto fail;
			}
			size = (size == 0) ? 8192 : size * 2;
			if (size > CONFIG_FILE_MAX + 1)
				size = CONFIG_FILE_MAX + 1;
			if ((nbuf = realloc(buf, size + 1)) == NULL) {
				snprintf(msg, sizeof msg, "out of memory");
				goto fail;
			}
			buf = nbuf;
		}
		n = fread(buf + len, 1, size - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		snprintf(msg, sizeof msg, "cannot read: %s", strerror(errno));
		goto fail;
	}
	fclose(f);
	buf[len] = '\0';
	cfg = config_parse(path, buf, len, errors, NULL);
	free(buf);
	return (cfg);

fail:
	fclose(f);
	free(buf);
	return (config_parse(path, "", 0, errors, msg));
}

void
config_log_warnings(const struct config *cfg, const char *prefix)
{
	const char	*line, *nl;

	for (line = cfg->warnings; line != NULL && *line != '\0';
	    line = nl + 1) {
		if ((nl = strchr(line, '\n')) == NULL)
			break;
		log_warnx("%s%.*s", prefix, (int)(nl - line), line);
	}
}

struct config *
config_ref(struct config *cfg)
{
	/* Worker threads take and drop references of their requests. */
	__atomic_add_fetch(&cfg->refs, 1, __ATOMIC_RELAXED);
	return (cfg);
}

void
config_unref(struct config *cfg)
{
	if (cfg == NULL)
		return;
	if (__atomic_sub_fetch(&cfg->refs, 1, __ATOMIC_ACQ_REL) == 0)
		config_free(cfg);
}

const struct route_conf *
config_find_route(const struct config *cfg, const char *path, size_t len)
{
	const struct route_conf	*r;
	size_t			 i, mlen;

	/* Longest first, so the first that matches is the longest. */
	for (i = 0; i < cfg->nroutes; i++) {
		r = cfg->routes[i];
		mlen = strlen(r->match);
		if (mlen > len || memcmp(path, r->match, mlen) != 0)
			continue;
		/* On a segment boundary: "/api" is not "/apixyz". */
		if (mlen == len || r->match[mlen - 1] == '/' ||
		    path[mlen] == '/' || path[mlen] == '?')
			return (r);
	}
	return (NULL);
}
