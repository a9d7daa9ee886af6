/*
 * test_config.c: config.c against SPEC section 2 and the messages listed at
 * the top of config.c.
 */

#ifdef HAVE_CONFIG_H
#include "autoconf.h"
#endif

#include <sys/stat.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "config.h"

#define UPSTREAM_U	"[upstream \"u\"]\nurl = http://127.0.0.1:9001\n"
/* A file needs a route: this one, to upstream u. */
#define ROUTE_U		"[route \"r\"]\nmatch = /\nupstreams = u\n"

static char	tmpdir[] = "/tmp/test_config.XXXXXX";

static struct config *
load_ok(const char *text)
{
	struct config	*cfg;
	char		*errors = (char *)1;

	cfg = config_load_string("t.ini", text, &errors);
	if (cfg == NULL) {
		print_error("unexpected errors:\n%s", errors);
		free(errors);
		fail();
	}
	assert_null(errors);
	assert_int_equal(cfg->refs, 1);
	return (cfg);
}

static void
expect_errors(const char *text, const char *expected)
{
	struct config	*cfg;
	char		*errors = NULL;

	cfg = config_load_string("x.ini", text, &errors);
	if (cfg != NULL)
		config_unref(cfg);
	assert_null(cfg);
	assert_non_null(errors);
	assert_string_equal(errors, expected);
	free(errors);
}

static const struct upstream_conf *
find_upstream(const struct config *cfg, const char *name)
{
	size_t	i;

	for (i = 0; i < cfg->nupstreams; i++) {
		if (strcmp(cfg->upstreams[i]->name, name) == 0)
			return (cfg->upstreams[i]);
	}
	fail_msg("no upstream %s", name);
	return (NULL);
}

static const struct route_conf *
find_route_named(const struct config *cfg, const char *name)
{
	size_t	i;

	for (i = 0; i < cfg->nroutes; i++) {
		if (strcmp(cfg->routes[i]->name, name) == 0)
			return (cfg->routes[i]);
	}
	fail_msg("no route %s", name);
	return (NULL);
}

static void
assert_in4(const struct listen_addr *la, const char *addr, unsigned port,
    const char *text)
{
	const struct sockaddr_in	*sin = (const void *)&la->ss;
	char				 buf[INET_ADDRSTRLEN];

	assert_int_equal(la->ss.ss_family, AF_INET);
	assert_int_equal(la->sslen, sizeof *sin);
	assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf));
	assert_string_equal(buf, addr);
	assert_int_equal(ntohs(sin->sin_port), port);
	assert_string_equal(la->text, text);
}

static void
assert_in6(const struct listen_addr *la, const char *addr, unsigned port,
    const char *text)
{
	const struct sockaddr_in6	*sin6 = (const void *)&la->ss;
	char				 buf[INET6_ADDRSTRLEN];

	assert_int_equal(la->ss.ss_family, AF_INET6);
	assert_int_equal(la->sslen, sizeof *sin6);
	assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf));
	assert_string_equal(buf, addr);
	assert_int_equal(ntohs(sin6->sin6_port), port);
	assert_string_equal(la->text, text);
}

/* ---- good files ---------------------------------------------------- */

static void
test_full(void **state)
{
	struct config			*cfg;
	const struct upstream_conf	*a, *b;
	const struct route_conf		*r;
	char				 ca[256], text[4096], log[256];
	FILE				*f;

	(void)state;
	snprintf(log, sizeof log, "%s/access.log", tmpdir);
	snprintf(ca, sizeof ca, "%s/ca.pem", tmpdir);
	assert_non_null(f = fopen(ca, "w"));
	fputs("not really a certificate\n", f);
	fclose(f);

	snprintf(text, sizeof text,
	    "; every key, none at its default\n"
	    "[server]\n"
	    "listen = 127.0.0.1:18080, [::1]:18080\n"
	    "workers = 4\n"
	    "max_connections = 500\n"
	    "header_timeout = 2s\n"
	    "body_timeout = 3s\n"
	    "keepalive_timeout = 0s\n"
	    "max_header_size = 32k\n"
	    "max_body_size = 0\n"
	    "drain_timeout = 1m\n"
	    "half_close = wait\n"
	    "access_log = %s\n"
	    "log_level = debug\n"
	    "[admin]\n"
	    "listen = 127.0.0.1:19901\n"
	    "[upstream \"a\"]\n"
	    "url = https://api.example.com:8443/base/\n"
	    "connect_timeout = 250ms\n"
	    "timeout = 2s\n"
	    "http2 = on\n"
	    "max_response_size = 1g\n"
	    "tls_verify = off\n"
	    "ca_file = %s\n"
	    "[upstream \"b\"]\n"
	    "url = http://10.0.0.2\n"
	    "http2 = prior-knowledge\n"
	    "[route \"r\"]\n"
	    "match = /api/\n"
	    "strip_prefix = yes\n"
	    "methods = GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS\n"
	    "mode = quorum\n"
	    "upstreams = b, a\n"
	    "deadline = 1h\n"
	    "hedge_delay = 0ms\n"
	    "quorum = 1\n"
	    "partial = allow\n", log, ca);
	cfg = load_ok(text);
	/* Every key, so some that mode quorum does not read. */
	assert_string_equal(cfg->warnings,
	    "t.ini:35: warning: key 'hedge_delay' has no effect in mode quorum "
	    "(route 'r'; it is for mode hedge)\n"
	    "t.ini:37: warning: key 'partial' has no effect in mode quorum "
	    "(route 'r'; it is for mode all)\n");

	assert_string_equal(cfg->path, "t.ini");
	assert_int_equal(cfg->nlisten, 2);
	assert_in4(&cfg->listen[0], "127.0.0.1", 18080, "127.0.0.1:18080");
	assert_in6(&cfg->listen[1], "::1", 18080, "[::1]:18080");
	assert_int_equal(cfg->workers, 4);
	assert_int_equal(cfg->max_connections, 500);
	assert_int_equal(cfg->header_timeout_ms, 2000);
	assert_int_equal(cfg->body_timeout_ms, 3000);
	assert_int_equal(cfg->keepalive_timeout_ms, 0);
	assert_int_equal(cfg->max_header_size, 32768);
	assert_int_equal(cfg->max_body_size, 0);
	assert_int_equal(cfg->drain_timeout_ms, 60000);
	assert_int_equal(cfg->half_close, HALF_CLOSE_WAIT);
	assert_string_equal(cfg->access_log, log);
	assert_int_equal(access(log, F_OK), -1);	/* checked, not created */
	assert_int_equal(cfg->log_level, LOG_LEVEL_DEBUG);
	assert_int_equal(cfg->nadmin_listen, 1);
	assert_in4(&cfg->admin_listen[0], "127.0.0.1", 19901,
	    "127.0.0.1:19901");

	assert_int_equal(cfg->nupstreams, 2);
	a = find_upstream(cfg, "a");
	assert_string_equal(a->url, "https://api.example.com:8443/base");
	assert_string_equal(a->host_header, "api.example.com:8443");
	assert_int_equal(a->connect_timeout_ms, 250);
	assert_int_equal(a->timeout_ms, 2000);
	assert_int_equal(a->http2, HTTP2_ON);
	assert_int_equal(a->max_response_size, 1024ULL * 1024 * 1024);
	assert_int_equal(a->tls_verify, 0);
	assert_string_equal(a->ca_file, ca);
	assert_int_equal(a->line, 17);
	b = find_upstream(cfg, "b");
	assert_string_equal(b->url, "http://10.0.0.2");
	assert_string_equal(b->host_header, "10.0.0.2");
	assert_int_equal(b->http2, HTTP2_PRIOR_KNOWLEDGE);

	assert_int_equal(cfg->nroutes, 1);
	r = cfg->routes[0];
	assert_string_equal(r->name, "r");
	assert_string_equal(r->match, "/api/");
	assert_int_equal(r->strip_prefix, 1);
	assert_int_equal(r->methods, HTTP_M_GET|HTTP_M_HEAD|HTTP_M_POST|
	    HTTP_M_PUT|HTTP_M_DELETE|HTTP_M_PATCH|HTTP_M_OPTIONS);
	assert_int_equal(r->mode, MODE_QUORUM);
	assert_int_equal(r->nupstreams, 2);
	assert_ptr_equal(r->upstreams[0], b);	/* in the order written */
	assert_ptr_equal(r->upstreams[1], a);
	assert_int_equal(r->deadline_ms, 3600000);
	assert_int_equal(r->hedge_delay_ms, 0);
	assert_int_equal(r->quorum, 1);
	assert_int_equal(r->partial, PARTIAL_ALLOW);
	assert_int_equal(r->line, 28);

	config_unref(cfg);
	unlink(ca);
}

static void
test_defaults(void **state)
{
	struct config			*cfg;
	const struct upstream_conf	*u;
	const struct route_conf		*r;

	(void)state;
	cfg = load_ok(UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n");

	assert_int_equal(cfg->nlisten, 1);
	assert_in4(&cfg->listen[0], "127.0.0.1", 8080, "127.0.0.1:8080");
	assert_int_equal(cfg->nadmin_listen, 1);
	assert_in4(&cfg->admin_listen[0], "127.0.0.1", 9901, "127.0.0.1:9901");
	assert_int_equal(cfg->workers, 1);
	assert_int_equal(cfg->max_connections, 10000);
	assert_int_equal(cfg->header_timeout_ms, 10000);
	assert_int_equal(cfg->body_timeout_ms, 30000);
	assert_int_equal(cfg->keepalive_timeout_ms, 60000);
	assert_int_equal(cfg->max_header_size, 16384);
	assert_int_equal(cfg->max_body_size, 1048576);
	assert_int_equal(cfg->drain_timeout_ms, 30000);
	assert_int_equal(cfg->half_close, HALF_CLOSE_CANCEL);
	assert_string_equal(cfg->access_log, "-");
	assert_int_equal(cfg->log_level, LOG_LEVEL_INFO);

	u = find_upstream(cfg, "u");
	assert_string_equal(u->url, "http://127.0.0.1:9001");
	assert_string_equal(u->host_header, "127.0.0.1:9001");
	assert_int_equal(u->connect_timeout_ms, 1000);
	assert_int_equal(u->timeout_ms, 5000);
	assert_int_equal(u->http2, HTTP2_OFF);
	assert_int_equal(u->max_response_size, 8 * 1048576);
	assert_int_equal(u->tls_verify, 1);
	assert_null(u->ca_file);
	assert_int_equal(u->line, 1);

	r = find_route_named(cfg, "r");
	assert_int_equal(r->strip_prefix, 0);
	assert_int_equal(r->methods, 0);
	assert_int_equal(r->mode, MODE_PROXY);
	assert_int_equal(r->deadline_ms, 30000);
	assert_int_equal(r->hedge_delay_ms, 50);
	assert_int_equal(r->quorum, 1);
	assert_int_equal(r->partial, PARTIAL_FAIL);
	assert_int_equal(r->line, 3);
	assert_null(cfg->warnings);
	config_unref(cfg);
}

/* SPEC section 2, as printed there, with the upstreams it names. */
static void
test_spec_example(void **state)
{
	struct config		*cfg;
	const struct route_conf	*r;

	(void)state;
	cfg = load_ok(
	    "[server]\n"
	    "listen = 127.0.0.1:8080, [::1]:8080   ; one or more addresses\n"
	    "workers = 1                 ; event-loop threads; 0 = per CPU\n"
	    "max_connections = 10000     ; beyond it new connections wait\n"
	    "header_timeout = 10s        ; request head must arrive within it\n"
	    "                            ; first byte on a kept-alive one\n"
	    "body_timeout = 30s          ; request body, else 408\n"
	    "keepalive_timeout = 60s     ; idle keep-alive connection\n"
	    "max_header_size = 16k       ; else 431\n"
	    "max_body_size = 1m          ; else 413\n"
	    "drain_timeout = 30s         ; SIGTERM\n"
	    "half_close = cancel         ; cancel | wait\n"
	    "access_log = -              ; a path, \"-\" or \"off\"\n"
	    "log_level = info            ; error | warn | info | debug\n"
	    "\n"
	    "[admin]\n"
	    "listen = 127.0.0.1:9901     ; GET /metrics, GET /healthz\n"
	    "\n"
	    "[upstream \"users\"]\n"
	    "url = http://127.0.0.1:9001 ; base URL\n"
	    "connect_timeout = 1s\n"
	    "timeout = 5s                ; whole upstream transfer\n"
	    "http2 = off                 ; off | prior-knowledge (h2c) | on\n"
	    "max_response_size = 8m      ; larger responses are a failure\n"
	    "tls_verify = on\n"
	    "ca_file =                   ; optional\n"
	    "\n"
	    "[route \"profile\"]\n"
	    "match = /api/profile        ; path prefix\n"
	    "strip_prefix = no           ; yes: drop the matched prefix\n"
	    "methods = GET, HEAD         ; optional; others get 405\n"
	    "mode = all                  ; proxy | all | first | hedge\n"
	    "upstreams = users, orders, recs\n"
	    "deadline = 3s               ; whole request\n"
	    "hedge_delay = 50ms          ; mode = hedge (default 50ms)\n"
	    "quorum = 2                  ; mode = quorum\n"
	    "partial = fail              ; mode = all: fail | allow\n"
	    "\n"
	    "[upstream \"orders\"]\n"
	    "url = http://127.0.0.1:9002\n"
	    "[upstream \"recs\"]\n"
	    "url = http://127.0.0.1:9003\n");
	assert_int_equal(cfg->nlisten, 2);
	assert_null(find_upstream(cfg, "users")->ca_file);
	r = find_route_named(cfg, "profile");
	assert_int_equal(r->methods, HTTP_M_GET|HTTP_M_HEAD);
	assert_int_equal(r->mode, MODE_ALL);
	assert_int_equal(r->nupstreams, 3);
	assert_string_equal(r->upstreams[2]->name, "recs");
	assert_int_equal(r->deadline_ms, 3000);
	assert_int_equal(r->quorum, 2);
	/* SPEC shows every route key on one mode all route. */
	assert_string_equal(cfg->warnings,
	    "t.ini:35: warning: key 'hedge_delay' has no effect in mode all "
	    "(route 'profile'; it is for mode hedge)\n"
	    "t.ini:36: warning: key 'quorum' has no effect in mode all "
	    "(route 'profile'; it is for mode quorum)\n");
	config_unref(cfg);
}

/* Comments, blanks, CRLF, a BOM, indentation, ':' for '='. */
static void
test_syntax(void **state)
{
	struct config	*cfg;

	(void)state;
	cfg = load_ok(
	    "\xef\xbb\xbf# a comment\r\n"
	    "; another\r\n"
	    "\r\n"
	    "  [ server ]   ; trailing comment\r\n"
	    "\tworkers = 3\r\n"
	    "    max_connections: 7   \r\n"
	    "access_log = /tmp/a;b ; ';' starts a comment after a blank\r\n"
	    "[upstream   \"u\"]\n"
	    "url=http://x\n"
	    "[route \"r\"] # why not\n"
	    "match = /\n"
	    "upstreams = u");		/* no newline at the end */
	assert_int_equal(cfg->workers, 3);
	assert_int_equal(cfg->max_connections, 7);
	assert_string_equal(cfg->access_log, "/tmp/a;b");
	assert_string_equal(cfg->routes[0]->upstreams[0]->url, "http://x");
	config_unref(cfg);
}

/* Sections in any order: a route may name upstreams defined after it. */
static void
test_order(void **state)
{
	struct config		*cfg;
	const struct route_conf	*r;

	(void)state;
	cfg = load_ok(
	    "[route \"r\"]\nmatch = /\nupstreams = z, y\n"
	    "[upstream \"y\"]\nurl = http://y\n"
	    "[server]\nworkers = 2\n"
	    "[upstream \"z\"]\nurl = http://z\n");
	r = cfg->routes[0];
	assert_int_equal(r->nupstreams, 2);
	assert_string_equal(r->upstreams[0]->name, "z");
	assert_string_equal(r->upstreams[1]->name, "y");
	assert_int_equal(cfg->workers, 2);
	config_unref(cfg);
}

static void
test_workers_auto(void **state)
{
	struct config	*cfg;
	long		 ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	(void)state;
	cfg = load_ok("[server]\nworkers = 0\n" UPSTREAM_U ROUTE_U);
	assert_true(cfg->workers >= 1);
	if (ncpu >= 1 && ncpu <= 1024)
		assert_int_equal(cfg->workers, ncpu);
	config_unref(cfg);
}

static void
test_bools(void **state)
{
	static const struct {
		const char	*text;
		int		 v;
	} cases[] = {
		{ "yes", 1 }, { "no", 0 }, { "on", 1 }, { "off", 0 },
		{ "true", 1 }, { "false", 0 }, { "1", 1 }, { "0", 0 },
		{ "YES", 1 }, { "Off", 0 },
	};
	struct config	*cfg;
	char		 text[256];
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(text, sizeof text, UPSTREAM_U "tls_verify = %s\n"
		    ROUTE_U, cases[i].text);
		cfg = load_ok(text);
		assert_int_equal(cfg->upstreams[0]->tls_verify, cases[i].v);
		config_unref(cfg);
	}
}

static void
test_urls(void **state)
{
	static const struct {
		const char	*in, *url, *host;
	} cases[] = {
		{ "http://h", "http://h", "h" },
		{ "http://h/", "http://h", "h" },
		{ "http://h//", "http://h", "h" },
		{ "http://h:81", "http://h:81", "h:81" },
		{ "https://a.b-c_d.example:8443/x/y/",
		  "https://a.b-c_d.example:8443/x/y", "a.b-c_d.example:8443" },
		{ "http://[::1]:9001/p", "http://[::1]:9001/p", "[::1]:9001" },
		{ "http://[2001:db8::1]", "http://[2001:db8::1]",
		  "[2001:db8::1]" },
		{ "HTTP://H:1", "HTTP://H:1", "H:1" },
	};
	struct config	*cfg;
	char		 text[256];
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(text, sizeof text, "[upstream \"u\"]\nurl = %s\n"
		    ROUTE_U, cases[i].in);
		cfg = load_ok(text);
		assert_string_equal(cfg->upstreams[0]->url, cases[i].url);
		assert_string_equal(cfg->upstreams[0]->host_header,
		    cases[i].host);
		config_unref(cfg);
	}
}

static void
test_quorum_default(void **state)
{
	static const char *const lists[] = {
		"a", "a, b", "a, b, c", "a, b, c, d", "a, b, c, d, e"
	};
	static const unsigned	 majority[] = { 1, 2, 2, 3, 3 };
	struct config		*cfg;
	char			 text[512];
	size_t			 i;

	(void)state;
	for (i = 0; i < 5; i++) {
		snprintf(text, sizeof text,
		    "[upstream \"a\"]\nurl = http://a\n"
		    "[upstream \"b\"]\nurl = http://b\n"
		    "[upstream \"c\"]\nurl = http://c\n"
		    "[upstream \"d\"]\nurl = http://d\n"
		    "[upstream \"e\"]\nurl = http://e\n"
		    "[route \"r\"]\nmatch = /\nmode = quorum\nupstreams = %s\n",
		    lists[i]);
		cfg = load_ok(text);
		assert_int_equal(cfg->routes[0]->nupstreams, i + 1);
		assert_int_equal(cfg->routes[0]->quorum, majority[i]);
		config_unref(cfg);
	}

	/* Every upstream is a valid quorum too. */
	cfg = load_ok("[upstream \"a\"]\nurl = http://a\n"
	    "[upstream \"b\"]\nurl = http://b\n"
	    "[route \"r\"]\nmatch = /\nupstreams = a, b\nquorum = 2\n");
	assert_int_equal(cfg->routes[0]->quorum, 2);
	config_unref(cfg);
}

static void
test_methods(void **state)
{
	struct config	*cfg;

	(void)state;
	assert_int_equal(config_method_bit("GET", 3), HTTP_M_GET);
	assert_int_equal(config_method_bit("HEAD", 4), HTTP_M_HEAD);
	assert_int_equal(config_method_bit("POST", 4), HTTP_M_POST);
	assert_int_equal(config_method_bit("PUT", 3), HTTP_M_PUT);
	assert_int_equal(config_method_bit("DELETE", 6), HTTP_M_DELETE);
	assert_int_equal(config_method_bit("PATCH", 5), HTTP_M_PATCH);
	assert_int_equal(config_method_bit("OPTIONS", 7), HTTP_M_OPTIONS);
	assert_int_equal(config_method_bit("CONNECT", 7), HTTP_M_CONNECT);
	assert_int_equal(config_method_bit("TRACE", 5), HTTP_M_TRACE);
	assert_int_equal(config_method_bit("get", 3), 0);
	assert_int_equal(config_method_bit("GETS", 4), 0);
	assert_int_equal(config_method_bit("GE", 2), 0);
	assert_int_equal(config_method_bit("", 0), 0);
	/* The length counts, not a NUL: a method inside a request line. */
	assert_int_equal(config_method_bit("GET /x HTTP/1.1", 3), HTTP_M_GET);
	assert_int_equal(config_method_bit("POSTX", 4), HTTP_M_POST);

	cfg = load_ok(UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n"
	    "methods = POST,PATCH ,  OPTIONS\n");
	assert_int_equal(cfg->routes[0]->methods,
	    HTTP_M_POST|HTTP_M_PATCH|HTTP_M_OPTIONS);
	config_unref(cfg);
}

static void
test_mode_names(void **state)
{
	(void)state;
	assert_string_equal(config_mode_name(MODE_PROXY), "proxy");
	assert_string_equal(config_mode_name(MODE_ALL), "all");
	assert_string_equal(config_mode_name(MODE_FIRST), "first");
	assert_string_equal(config_mode_name(MODE_HEDGE), "hedge");
	assert_string_equal(config_mode_name(MODE_QUORUM), "quorum");
}

/* ---- durations and sizes --------------------------------------------- */

static void
test_durations(void **state)
{
	static const struct {
		const char	*s;
		uint64_t	 ms;
	} good[] = {
		{ "0ms", 0 }, { "0s", 0 }, { "0m", 0 }, { "0h", 0 },
		{ "1ms", 1 }, { "250ms", 250 }, { "3s", 3000 },
		{ "2m", 120000 }, { "1h", 3600000 }, { "007s", 7000 },
		{ "18446744073709551615ms", UINT64_MAX },
		{ "18446744073709551s", 18446744073709551000ULL },
		{ "5124095576030h", 5124095576030ULL * 3600000 },
	};
	static const char *const bad[] = {
		"", "5", "0", "s", "ms", "5x", "5sec", "5S", "5MS", "1.5s",
		"-1s", "+1s", " 1s", "1s ", "1 s", "1s1", "1d", "1hh",
		"0x10s", "18446744073709551616ms",	/* 2^64 */
		"18446744073709552s",			/* overflows in ms */
		"5124095576031h",
		"99999999999999999999999999999ms",
	};
	uint64_t	v;
	size_t		i;

	(void)state;
	for (i = 0; i < sizeof good / sizeof good[0]; i++) {
		v = 42;
		if (config_parse_duration(good[i].s, &v) != 0)
			fail_msg("'%s' refused", good[i].s);
		assert_int_equal(v, good[i].ms);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		v = 42;
		if (config_parse_duration(bad[i], &v) != -1)
			fail_msg("'%s' accepted", bad[i]);
		assert_int_equal(v, 42);
	}
}

static void
test_sizes(void **state)
{
	static const struct {
		const char	*s;
		uint64_t	 bytes;
	} good[] = {
		{ "0", 0 }, { "512", 512 }, { "0k", 0 }, { "16k", 16384 },
		{ "16K", 16384 }, { "1m", 1048576 }, { "1M", 1048576 },
		{ "2g", 2147483648ULL }, { "2G", 2147483648ULL },
		{ "18446744073709551615", UINT64_MAX },
		{ "18014398509481983k", 18014398509481983ULL << 10 },
		{ "17179869183g", 17179869183ULL << 30 },
	};
	static const char *const bad[] = {
		"", "k", "1kb", "1KB", "1.5k", "-1", "+1", " 1", "1 ", "1 k",
		"1t", "1b", "0x10", "1kk",
		"18446744073709551616",			/* 2^64 */
		"18014398509481984k", "17592186044416m", "17179869184g",
	};
	uint64_t	v;
	size_t		i;

	(void)state;
	for (i = 0; i < sizeof good / sizeof good[0]; i++) {
		v = 42;
		if (config_parse_size(good[i].s, &v) != 0)
			fail_msg("'%s' refused", good[i].s);
		assert_int_equal(v, good[i].bytes);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		v = 42;
		if (config_parse_size(bad[i], &v) != -1)
			fail_msg("'%s' accepted", bad[i]);
		assert_int_equal(v, 42);
	}
}

/* ---- listen ---------------------------------------------------------- */

static void
test_listen_parse(void **state)
{
	static const char *const bad[] = {
		"", "127.0.0.1", "127.0.0.1:", ":8080", "127.0.0.1:0",
		"127.0.0.1:65536", "127.0.0.1:http", "127.0.0.1:-1",
		"127.0.0.1:+80", "127.0.0.1: 80", "[::1]8080", "[::1]",
		"[::1]:", "::1:8080", "[127.0.0.1]:80", "[nope]:80",
		"example.com:80", "127.1:80", "0x7f.0.0.1:80", "256.0.0.1:80",
		"1.2.3.4.5:80", "*:", "**:80", "[*]:80", "localhost6:80",
		" 127.0.0.1:80",
		"[0000:0000:0000:0000:0000:0000:0000:0001]:8080123456789012345",
	};
	struct listen_addr	la;
	size_t			i;

	(void)state;
	assert_int_equal(config_parse_listen("127.0.0.1:8080", &la), 0);
	assert_in4(&la, "127.0.0.1", 8080, "127.0.0.1:8080");
	assert_int_equal(config_parse_listen("10.1.2.3:1", &la), 0);
	assert_in4(&la, "10.1.2.3", 1, "10.1.2.3:1");
	assert_int_equal(config_parse_listen("0.0.0.0:65535", &la), 0);
	assert_in4(&la, "0.0.0.0", 65535, "0.0.0.0:65535");
	assert_int_equal(config_parse_listen("*:80", &la), 0);
	assert_in4(&la, "0.0.0.0", 80, "*:80");
	assert_int_equal(config_parse_listen("localhost:8080", &la), 0);
	assert_in4(&la, "127.0.0.1", 8080, "localhost:8080");
	assert_int_equal(config_parse_listen("127.0.0.1:0080", &la), 0);
	assert_in4(&la, "127.0.0.1", 80, "127.0.0.1:0080");
	assert_int_equal(config_parse_listen("[::1]:8080", &la), 0);
	assert_in6(&la, "::1", 8080, "[::1]:8080");
	assert_int_equal(config_parse_listen("[::]:443", &la), 0);
	assert_in6(&la, "::", 443, "[::]:443");
	assert_int_equal(config_parse_listen("[2001:db8::5]:9", &la), 0);
	assert_in6(&la, "2001:db8::5", 9, "[2001:db8::5]:9");

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (config_parse_listen(bad[i], &la) != -1)
			fail_msg("'%s' accepted", bad[i]);
	}
}

static void
test_listen_list(void **state)
{
	struct config	*cfg;
	char		 text[1024];
	size_t		 off, i;

	(void)state;
	cfg = load_ok("[server]\nlisten = *:8080 ,127.0.0.1:8081,[::1]:8080\n"
	    "[admin]\nlisten = localhost:9999, [::1]:9999\n" UPSTREAM_U ROUTE_U);
	assert_int_equal(cfg->nlisten, 3);
	assert_in4(&cfg->listen[0], "0.0.0.0", 8080, "*:8080");
	assert_in4(&cfg->listen[1], "127.0.0.1", 8081, "127.0.0.1:8081");
	assert_in6(&cfg->listen[2], "::1", 8080, "[::1]:8080");
	assert_int_equal(cfg->nadmin_listen, 2);
	assert_in4(&cfg->admin_listen[0], "127.0.0.1", 9999, "localhost:9999");
	config_unref(cfg);

	/*
	 * CONFIG_MAX_LISTEN is allowed, one more is not. Short addresses:
	 * the line must fit in a stock libinih's 200 bytes too.
	 */
	off = (size_t)snprintf(text, sizeof text, "[server]\nlisten = ");
	for (i = 0; i < CONFIG_MAX_LISTEN; i++)
		off += (size_t)snprintf(text + off, sizeof text - off,
		    "%s*:%zu", i ? "," : "", 1000 + i);
	snprintf(text + off, sizeof text - off, "\n" UPSTREAM_U ROUTE_U);
	cfg = load_ok(text);
	assert_int_equal(cfg->nlisten, CONFIG_MAX_LISTEN);
	assert_in4(&cfg->listen[CONFIG_MAX_LISTEN - 1], "0.0.0.0",
	    1000 + CONFIG_MAX_LISTEN - 1, "*:1015");
	config_unref(cfg);
	snprintf(text + off, sizeof text - off, ",*:2000\n" UPSTREAM_U ROUTE_U);
	expect_errors(text,
	    "x.ini:2: too many listen addresses (at most 16)\n");
}

/* ---- routes ---------------------------------------------------------- */

static void
test_route_lookup(void **state)
{
	static const struct {
		const char	*path;
		const char	*route;		/* NULL: none */
	} cases[] = {
		{ "/", "root" },
		{ "/x", "root" },
		{ "/api", "api" },
		{ "/api/", "api" },
		{ "/api/x", "api" },
		{ "/apixyz", "root" },		/* not a segment of /api */
		{ "/ap", "root" },
		{ "/api/v1", "v1" },
		{ "/api/v1/", "v1" },
		{ "/api/v1x", "api" },
		{ "/api/v1/users", "v1" },	/* match "/api/v1/users/" */
		{ "/api/v1/users/", "users" },
		{ "/api/v1/users/7", "users" },
		{ "/static", "root" },		/* match "/static/" */
		{ "/static/", "static" },
		{ "/static/a.css", "static" },
		{ "/staticx", "root" },
		{ "/files.tar", "files" },
		{ "/files.tar.gz", "root" },
	};
	struct config		*cfg;
	const struct route_conf	*r;
	size_t			 i;

	(void)state;
	cfg = load_ok(UPSTREAM_U
	    "[route \"root\"]\nmatch = /\nupstreams = u\n"
	    "[route \"api\"]\nmatch = /api\nupstreams = u\n"
	    "[route \"users\"]\nmatch = /api/v1/users/\nupstreams = u\n"
	    "[route \"v1\"]\nmatch = /api/v1\nupstreams = u\n"
	    "[route \"static\"]\nmatch = /static/\nupstreams = u\n"
	    "[route \"files\"]\nmatch = /files.tar\nupstreams = u\n");

	/* Stored longest first. */
	assert_int_equal(cfg->nroutes, 6);
	for (i = 1; i < cfg->nroutes; i++)
		assert_true(strlen(cfg->routes[i - 1]->match) >=
		    strlen(cfg->routes[i]->match));
	assert_string_equal(cfg->routes[0]->name, "users");
	assert_string_equal(cfg->routes[5]->name, "root");

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		r = config_find_route(cfg, cases[i].path,
		    strlen(cases[i].path));
		if (cases[i].route == NULL) {
			assert_null(r);
			continue;
		}
		if (r == NULL || strcmp(r->name, cases[i].route) != 0)
			fail_msg("%s: got %s, want %s", cases[i].path,
			    r ? r->name : "none", cases[i].route);
	}

	/* Only len bytes count: the caller cuts the query off. */
	r = config_find_route(cfg, "/api/v1?q=/x", 7);
	assert_string_equal(r->name, "v1");
	r = config_find_route(cfg, "/apixyz", 4);
	assert_string_equal(r->name, "api");
	r = config_find_route(cfg, "/api?x", 6);
	assert_string_equal(r->name, "api");
	config_unref(cfg);

	/* No "/" route: unmatched paths find nothing. */
	cfg = load_ok(UPSTREAM_U "[route \"a\"]\nmatch = /a\nupstreams = u\n");
	assert_null(config_find_route(cfg, "/", 1));
	assert_null(config_find_route(cfg, "/b", 2));
	assert_null(config_find_route(cfg, "/ab", 3));
	assert_null(config_find_route(cfg, "", 0));
	assert_non_null(config_find_route(cfg, "/a/b", 4));
	config_unref(cfg);
}

/*
 * An inline comment starts with ';' or '#' after a blank, for every value;
 * without a blank before it either is part of the value. Line numbers
 * after comments stay right.
 */
static void
test_inline_comments(void **state)
{
	struct config		*cfg;
	const struct route_conf	*r;
	char			 text[1024], a[256], b[256], c[256];

	(void)state;
	snprintf(a, sizeof a, "%s/acc.log", tmpdir);
	snprintf(b, sizeof b, "%s/a#b", tmpdir);
	snprintf(c, sizeof c, "%s/a;b", tmpdir);

	snprintf(text, sizeof text,
	    "[server]   # the proxy\n"
	    "access_log = %s   # access log\n"
	    "workers = 3\t; three\n"
	    "[upstream \"u\"]\n"
	    "url = http://127.0.0.1:9001/p #not a fragment\n"
	    "ca_file =   # none\n"
	    "[route \"r\"] ; a route\n"
	    "match = /  # all\n"
	    "upstreams = u ; one\n"
	    "mode = proxy # the default\n", a);
	cfg = load_ok(text);
	assert_string_equal(cfg->access_log, a);
	assert_int_equal(cfg->workers, 3);
	assert_string_equal(cfg->upstreams[0]->url, "http://127.0.0.1:9001/p");
	assert_null(cfg->upstreams[0]->ca_file);
	r = cfg->routes[0];
	assert_string_equal(r->match, "/");
	assert_int_equal(r->nupstreams, 1);
	assert_null(cfg->warnings);
	config_unref(cfg);

	/* Without a blank before it, '#' or ';' is part of the value. */
	snprintf(text, sizeof text, "[server]\naccess_log = %s\n"
	    UPSTREAM_U ROUTE_U, b);
	cfg = load_ok(text);
	assert_string_equal(cfg->access_log, b);
	config_unref(cfg);
	snprintf(text, sizeof text, "[server]\naccess_log = %s # c\n"
	    UPSTREAM_U ROUTE_U, c);
	cfg = load_ok(text);
	assert_string_equal(cfg->access_log, c);
	config_unref(cfg);

	/* The value is judged without its comment, at its own line. */
	expect_errors("# one\n; two\n" UPSTREAM_U
	    "timeout = 5x   # five what?\n"
	    "connect_timeout = # nothing\n" ROUTE_U,
	    "x.ini:5: bad duration '5x' for 'timeout' (use ms, s, m or h)\n"
	    "x.ini:6: bad duration '' for 'connect_timeout' "
	    "(use ms, s, m or h)\n");
	/* '=' right after a blank-led '#' is in the comment. */
	expect_errors("[server]\nworkers #= 2\n" UPSTREAM_U ROUTE_U,
	    "x.ini:2: syntax error: expected 'key = value'\n");
}

/* Keys the route's mode does not read: warnings, in line order. */
static void
test_mode_key_warnings(void **state)
{
	struct config	*cfg;

	(void)state;
	cfg = load_ok(UPSTREAM_U "[upstream \"v\"]\nurl = http://v\n"
	    "[route \"all\"]\nmatch = /a\nupstreams = u, v\nmode = all\n"
	    "hedge_delay = 10ms\nquorum = 2\npartial = allow\n"
	    "[route \"first\"]\nmatch = /f\nupstreams = u, v\nmode = first\n"
	    "hedge_delay = 10ms\n"
	    "[route \"proxy\"]\nmatch = /p\nupstreams = u\n"
	    "partial = fail\n");
	assert_string_equal(cfg->warnings,
	    "t.ini:9: warning: key 'hedge_delay' has no effect in mode all "
	    "(route 'all'; it is for mode hedge)\n"
	    "t.ini:10: warning: key 'quorum' has no effect in mode all "
	    "(route 'all'; it is for mode quorum)\n"
	    "t.ini:16: warning: key 'hedge_delay' has no effect in mode first "
	    "(route 'first'; it is for mode hedge)\n"
	    "t.ini:20: warning: key 'partial' has no effect in mode proxy "
	    "(route 'proxy'; it is for mode all)\n");
	config_unref(cfg);

	/* Each in its own mode: nothing to say. */
	cfg = load_ok(UPSTREAM_U "[upstream \"v\"]\nurl = http://v\n"
	    "[route \"h\"]\nmatch = /h\nupstreams = u, v\nmode = hedge\n"
	    "hedge_delay = 10ms\n"
	    "[route \"q\"]\nmatch = /q\nupstreams = u, v\nmode = quorum\n"
	    "quorum = 2\n"
	    "[route \"a\"]\nmatch = /a\nupstreams = u, v\nmode = all\n"
	    "partial = allow\n");
	assert_null(cfg->warnings);
	config_unref(cfg);

	/* Safe repeats and budgets: repeat_unsafe is for the modes that
	 * repeat, budget for those with extra attempts. */
	cfg = load_ok(UPSTREAM_U "[upstream \"v\"]\nurl = http://v\n"
	    "[route \"all\"]\nmatch = /a\nupstreams = u, v\nmode = all\n"
	    "repeat_unsafe = yes\nbudget = 5%\n"
	    "[route \"first\"]\nmatch = /f\nupstreams = u, v\nmode = first\n"
	    "repeat_unsafe = yes\nbudget_min = 1\n"
	    "[route \"proxy\"]\nmatch = /p\nupstreams = u\nbudget = 5%\n"
	    "repeat_unsafe = no\n"
	    "[route \"hedge\"]\nmatch = /h\nupstreams = u, v\nmode = hedge\n"
	    "repeat_unsafe = yes\nbudget = 5%\nbudget_min = 1\n");
	assert_string_equal(cfg->warnings,
	    "t.ini:9: warning: key 'repeat_unsafe' has no effect in mode all "
	    "(route 'all'; it is for modes first, hedge and quorum)\n"
	    "t.ini:10: warning: key 'budget' has no effect in mode all "
	    "(route 'all'; it is for modes proxy and hedge)\n"
	    "t.ini:16: warning: key 'budget_min' has no effect in mode first "
	    "(route 'first'; it is for modes proxy and hedge)\n"
	    "t.ini:21: warning: key 'repeat_unsafe' has no effect in mode "
	    "proxy (route 'proxy'; it is for modes first, hedge and quorum)\n");
	config_unref(cfg);

	/* An upstream's keys that another key turns off. */
	cfg = load_ok("[upstream \"u\"]\nurl = http://u\nhealth_interval = 1s\n"
	    "health_fall = 2\neject_after = 0\neject_time = 1s\n"
	    "balance = least_request\n"
	    "[upstream \"v\"]\nservers = http://v, http://w\n"
	    "health_check = /h\nhealth_rise = 3\neject_after = 1\n"
	    "max_ejected = 1\nbalance = least_request\n" ROUTE_U);
	assert_string_equal(cfg->warnings,
	    "t.ini:3: warning: key 'health_interval' has no effect without "
	    "health_check (upstream 'u')\n"
	    "t.ini:4: warning: key 'health_fall' has no effect without "
	    "health_check (upstream 'u')\n"
	    "t.ini:6: warning: key 'eject_time' has no effect with "
	    "eject_after = 0 (upstream 'u')\n"
	    "t.ini:7: warning: key 'balance' has no effect with one server "
	    "(upstream 'u')\n");
	config_unref(cfg);

	/* With errors, warnings are listed among them; a bad mode or a
	 * bad value gives no warning of its own. */
	expect_errors(UPSTREAM_U ROUTE_U "mode = all\nhedge_delay = 1s\n"
	    "quorum = 0\nbogus = 1\n"
	    "[route \"r2\"]\nmatch = /2\nupstreams = u\nmode = fast\n"
	    "quorum = 1\n",
	    "x.ini:7: warning: key 'hedge_delay' has no effect in mode all "
	    "(route 'r'; it is for mode hedge)\n"
	    "x.ini:8: 'quorum' out of range: '0' (1 to 1000000)\n"
	    "x.ini:9: unknown key 'bogus' in [route \"r\"]\n"
	    "x.ini:13: bad value 'fast' for 'mode' (use proxy, all, first, "
	    "hedge or quorum)\n");
}

/* Nothing to serve: no [route] at all is an error, the only one. */
static void
test_no_route(void **state)
{
	(void)state;
	expect_errors("", "x.ini: no [route] section: nothing to serve\n");
	expect_errors("# comments\n; only\n\n",
	    "x.ini: no [route] section: nothing to serve\n");
	expect_errors("[server]\nworkers = 2\n" UPSTREAM_U,
	    "x.ini: no [route] section: nothing to serve\n");
	/* A misspelt or broken [route] is reported as itself. */
	expect_errors("[server]\nlistn = 1\n",
	    "x.ini:2: unknown key 'listn' in [server]\n");
	expect_errors(UPSTREAM_U "[route r]\nmatch = /\nupstreams = u\n",
	    "x.ini:3: section [route r] needs a quoted name, as in "
	    "[route \"NAME\"]\n");
	expect_errors(UPSTREAM_U "[routes \"r\"]\n",
	    "x.ini:3: unknown section [routes \"r\"]\n");
}

/* The access log is checked at load, never created there. */
static void
test_access_log(void **state)
{
	struct config	*cfg;
	char		 text[1024], want[1024], file[256], sub[256];
	FILE		*f;

	(void)state;
	expect_errors("[server]\naccess_log = /nonexistent/dir/acc.log\n"
	    UPSTREAM_U ROUTE_U,
	    "x.ini:2: cannot create access_log '/nonexistent/dir/acc.log' in "
	    "'/nonexistent/dir': No such file or directory\n");

	/* A directory is no log file. */
	snprintf(text, sizeof text, "[server]\naccess_log = %s\n"
	    UPSTREAM_U ROUTE_U, tmpdir);
	snprintf(want, sizeof want, "x.ini:2: cannot write access_log '%s': "
	    "Is a directory\n", tmpdir);
	expect_errors(text, want);

	/* Below a file. */
	snprintf(file, sizeof file, "%s/plain", tmpdir);
	snprintf(sub, sizeof sub, "%s/plain/acc.log", tmpdir);
	assert_non_null(f = fopen(file, "w"));
	fclose(f);
	snprintf(text, sizeof text, "[server]\naccess_log = %s\n"
	    UPSTREAM_U ROUTE_U, sub);
	snprintf(want, sizeof want, "x.ini:2: cannot write access_log '%s': "
	    "Not a directory\n", sub);
	expect_errors(text, want);

	/* An existing file: taken, and left as it was. */
	assert_non_null(f = fopen(file, "w"));
	fputs("old line\n", f);
	fclose(f);
	snprintf(text, sizeof text, "[server]\naccess_log = %s\n"
	    UPSTREAM_U ROUTE_U, file);
	cfg = load_ok(text);
	assert_string_equal(cfg->access_log, file);
	config_unref(cfg);
	assert_non_null(f = fopen(file, "r"));
	assert_non_null(fgets(text, sizeof text, f));
	assert_string_equal(text, "old line\n");
	assert_null(fgets(text, sizeof text, f));
	fclose(f);
	assert_int_equal(unlink(file), 0);

	/* "-" and "off" are no files; a relative name is in ".". */
	cfg = load_ok("[server]\naccess_log = off\n" UPSTREAM_U ROUTE_U);
	assert_string_equal(cfg->access_log, "off");
	config_unref(cfg);
	cfg = load_ok("[server]\naccess_log = -\n" UPSTREAM_U ROUTE_U);
	config_unref(cfg);
	if (access(".", W_OK) == 0) {
		cfg = load_ok("[server]\naccess_log = test-config-acc.log\n"
		    UPSTREAM_U ROUTE_U);
		assert_int_equal(access("test-config-acc.log", F_OK), -1);
		config_unref(cfg);
	}
}

/* ---- errors, one at a time ------------------------------------------- */

struct bad_case {
	const char	*text;
	const char	*errors;
};

#define LONGNAME \
	"a123456789b123456789c123456789d123456789e123456789f123456789g123"

static const struct bad_case bad_cases[] = {
	/* sections */
	{ "[server]\nlistn = 1\n",
	  "x.ini:2: unknown key 'listn' in [server]\n" },
	{ "[admin]\nport = 1\n",
	  "x.ini:2: unknown key 'port' in [admin]\n" },
	{ UPSTREAM_U "foo = 1\n",
	  "x.ini:3: unknown key 'foo' in [upstream \"u\"]\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\nURL = x\n",
	  "x.ini:6: unknown key 'URL' in [route \"r\"]\n" },
	{ "[server]\nworkers = 1\nworkers = 2\n",
	  "x.ini:3: duplicate key 'workers' in [server] (first at line 2)\n" },
	{ UPSTREAM_U "timeout = 1s\n\ntimeout = 2s\n",
	  "x.ini:5: duplicate key 'timeout' in [upstream \"u\"] "
	  "(first at line 3)\n" },
	{ "workers = 1\n[server]\n",
	  "x.ini:1: key 'workers' outside of any section\n" },
	{ "[serverr]\nlisten = nonsense\nx = y\n",
	  "x.ini:1: unknown section [serverr]\n" },
	{ "[server \"a\"]\n",
	  "x.ini:1: unknown section [server \"a\"]\n" },
	{ "[]\n",
	  "x.ini:1: unknown section []\n" },
	{ "[upstreams \"u\"]\n",
	  "x.ini:1: unknown section [upstreams \"u\"]\n" },
	{ "[upstream users]\nurl = http://a\n",
	  "x.ini:1: section [upstream users] needs a quoted name, as in "
	  "[upstream \"NAME\"]\n" },
	{ "[route]\nmatch = /\n",
	  "x.ini:1: section [route] needs a quoted name, as in "
	  "[route \"NAME\"]\n" },
	{ "[route \"a\" \"b\"]\n",
	  "x.ini:1: section [route \"a\" \"b\"] needs a quoted name, as in "
	  "[route \"NAME\"]\n" },
	{ "[upstream \"a b\"]\nurl = http://a\n",
	  "x.ini:1: bad upstream name 'a b' (1 to 64 letters, digits, '_', "
	  "'.' or '-')\n" },
	{ "[route \"\"]\n",
	  "x.ini:1: bad route name '' (1 to 64 letters, digits, '_', '.' or "
	  "'-')\n" },
	{ "[route \"" LONGNAME "4\"]\n",
	  "x.ini:1: bad route name '" LONGNAME "4' (1 to 64 letters, digits, "
	  "'_', '.' or '-')\n" },
	{ "[server]\nworkers = 2\n[server]\nworkers = x\n",
	  "x.ini:3: duplicate section [server] (first at line 1)\n" },
	{ "[admin]\n[admin]\n",
	  "x.ini:2: duplicate section [admin] (first at line 1)\n" },
	{ "\n\n\n[upstream \"users\"]\nurl = http://a\n"
	  "[upstream \"users\"]\nurl = http://b\n",
	  "x.ini:6: duplicate upstream 'users' (first at line 4)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n"
	  "[route \"r\"]\nmatch = /x\nupstreams = u\n",
	  "x.ini:6: duplicate route 'r' (first at line 3)\n" },
	{ "[upstream \"u\"]\ntimeout = 1s\n",
	  "x.ini:1: missing key 'url' in [upstream \"u\"]\n" },
	/* servers and health */
	{ "[upstream \"u\"]\nurl = http://a\nservers = http://b\n" ROUTE_U,
	  "x.ini:3: 'url' and 'servers' both given in [upstream \"u\"] "
	  "(use one)\n" },
	{ "[upstream \"u\"]\nservers = http://a, , ftp://b\n" ROUTE_U,
	  "x.ini:2: empty item in 'servers'\n"
	  "x.ini:2: bad url 'ftp://b' (use http:// or https://)\n" },
	{ "[upstream \"u\"]\nservers = http://a weight=0, http://b wait=2, "
	  "http://c weight=257\n" ROUTE_U,
	  "x.ini:2: bad weight '0' in 'servers' (1 to 256)\n"
	  "x.ini:2: bad server 'http://b wait=2' in 'servers' (URL or URL "
	  "weight=N)\n"
	  "x.ini:2: bad weight '257' in 'servers' (1 to 256)\n" },
	{ "[upstream \"u\"]\nservers = http://a/, http://a\n" ROUTE_U,
	  "x.ini:2: duplicate server 'http://a' in 'servers'\n" },
	{ "[upstream \"u\"]\nurl = http://a\nbalance = random\n"
	  "max_ejected = 101%\nhealth_check = health\neject_time = 1m\n"
	  "eject_time_max = 30s\n" ROUTE_U,
	  "x.ini:3: bad value 'random' for 'balance' (use round_robin or "
	  "least_request)\n"
	  "x.ini:4: 'max_ejected' out of range: '101%' (0% to 100%)\n"
	  "x.ini:5: bad health_check 'health' (off, or a path starting with "
	  "'/', without '?', '#' or spaces)\n"
	  "x.ini:7: 'eject_time_max' (30s) is below 'eject_time' (1m)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n"
	  "budget = 20\nbudget_min = -1\n",
	  "x.ini:6: bad percentage '20' for 'budget' (use N%)\n"
	  "x.ini:7: bad number '-1' for 'budget_min'\n" },
	{ "\n[route \"r\"]\nmode = all\n",
	  "x.ini:2: missing key 'match' in [route \"r\"]\n"
	  "x.ini:2: missing key 'upstreams' in [route \"r\"]\n" },

	/* syntax */
	{ "[server\nworkers = x\n",
	  "x.ini:1: syntax error: missing ']'\n" },
	{ "[server] workers = 1\n",
	  "x.ini:1: syntax error: unexpected text after ']'\n" },
	{ "[server]\nworkers\n",
	  "x.ini:2: syntax error: expected 'key = value'\n" },
	{ "[server]\n= 1\n",
	  "x.ini:2: syntax error: expected 'key = value'\n" },
	{ "[server]\nworkers ; = 1\n",
	  "x.ini:2: syntax error: expected 'key = value'\n" },

	/* values */
	{ "[server]\nworkers = abc\n",
	  "x.ini:2: bad number 'abc' for 'workers'\n" },
	{ "[server]\nworkers = -1\n",
	  "x.ini:2: bad number '-1' for 'workers'\n" },
	{ "[server]\nworkers = 1.5\n",
	  "x.ini:2: bad number '1.5' for 'workers'\n" },
	{ "[server]\nworkers =\n",
	  "x.ini:2: bad number '' for 'workers'\n" },
	{ "[server]\nworkers = 99999999999999999999999\n",
	  "x.ini:2: bad number '99999999999999999999999' for 'workers'\n" },
	{ "[server]\nworkers = 1025\n",
	  "x.ini:2: 'workers' out of range: '1025' (0 to 1024)\n" },
	{ "[server]\nmax_connections = 0\n",
	  "x.ini:2: 'max_connections' out of range: '0' (1 to 1000000)\n" },
	{ "[server]\nmax_connections = 1000001\n",
	  "x.ini:2: 'max_connections' out of range: '1000001' "
	  "(1 to 1000000)\n" },
	{ UPSTREAM_U "timeout = 5x\n",
	  "x.ini:3: bad duration '5x' for 'timeout' (use ms, s, m or h)\n" },
	{ "[server]\nheader_timeout = 10\n",
	  "x.ini:2: bad duration '10' for 'header_timeout' "
	  "(use ms, s, m or h)\n" },
	{ "[server]\nheader_timeout = 0s\n",
	  "x.ini:2: 'header_timeout' out of range: '0s' (1ms to 24h)\n" },
	{ "[server]\nbody_timeout = 0ms\n",
	  "x.ini:2: 'body_timeout' out of range: '0ms' (1ms to 24h)\n" },
	{ "[server]\ndrain_timeout = 25h\n",
	  "x.ini:2: 'drain_timeout' out of range: '25h' (0s to 24h)\n" },
	{ "[server]\nkeepalive_timeout = 86400001ms\n",
	  "x.ini:2: 'keepalive_timeout' out of range: '86400001ms' "
	  "(0s to 24h)\n" },
	{ UPSTREAM_U "connect_timeout = 0s\n",
	  "x.ini:3: 'connect_timeout' out of range: '0s' (1ms to 24h)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n"
	  "deadline = 0ms\n",
	  "x.ini:6: 'deadline' out of range: '0ms' (1ms to 24h)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n"
	  "hedge_delay = 50\n",
	  "x.ini:6: bad duration '50' for 'hedge_delay' "
	  "(use ms, s, m or h)\n" },
	{ "[server]\nmax_body_size = 1x\n",
	  "x.ini:2: bad size '1x' for 'max_body_size' "
	  "(use a number, optionally with k, m or g)\n" },
	{ "[server]\nmax_body_size = 5g\n",
	  "x.ini:2: 'max_body_size' out of range: '5g' (0 to 4g)\n" },
	{ "[server]\nmax_header_size = 1023\n",
	  "x.ini:2: 'max_header_size' out of range: '1023' (1k to 1m)\n" },
	{ "[server]\nmax_header_size = 2m\n",
	  "x.ini:2: 'max_header_size' out of range: '2m' (1k to 1m)\n" },
	{ UPSTREAM_U "max_response_size = 512\n",
	  "x.ini:3: 'max_response_size' out of range: '512' (1k to 4g)\n" },
	{ UPSTREAM_U "tls_verify = maybe\n",
	  "x.ini:3: bad boolean 'maybe' for 'tls_verify' (use yes or no)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n"
	  "strip_prefix = 2\n",
	  "x.ini:6: bad boolean '2' for 'strip_prefix' (use yes or no)\n" },
	{ "[server]\nhalf_close = close\n",
	  "x.ini:2: bad value 'close' for 'half_close' "
	  "(use cancel or wait)\n" },
	{ "[server]\nlog_level = INFO\n",
	  "x.ini:2: bad value 'INFO' for 'log_level' "
	  "(use error, warn, info or debug)\n" },
	{ UPSTREAM_U "http2 = h2c\n",
	  "x.ini:3: bad value 'h2c' for 'http2' "
	  "(use off, prior-knowledge or on)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\nmode = race\n",
	  "x.ini:6: bad value 'race' for 'mode' "
	  "(use proxy, all, first, hedge or quorum)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n"
	  "partial = ignore\n",
	  "x.ini:6: bad value 'ignore' for 'partial' (use fail or allow)\n" },
	{ "[server]\naccess_log =   ; nothing\n",
	  "x.ini:2: empty value for 'access_log'\n" },

	/* listen */
	{ "[server]\nlisten = 127.0.0.1\n",
	  "x.ini:2: bad listen address '127.0.0.1' (expected HOST:PORT)\n" },
	{ "[server]\nlisten = 127.0.0.1:0\n",
	  "x.ini:2: bad listen address '127.0.0.1:0' "
	  "(port must be 1 to 65535)\n" },
	{ "[server]\nlisten = 127.0.0.1:65536\n",
	  "x.ini:2: bad listen address '127.0.0.1:65536' "
	  "(port must be 1 to 65535)\n" },
	{ "[server]\nlisten = example.com:80\n",
	  "x.ini:2: bad listen address 'example.com:80' "
	  "(not a numeric IPv4 or [IPv6] address)\n" },
	{ "[admin]\nlisten = ::1:80\n",
	  "x.ini:2: bad listen address '::1:80' "
	  "(not a numeric IPv4 or [IPv6] address)\n" },
	{ "[server]\nlisten = [::1]:80:80\n",
	  "x.ini:2: bad listen address '[::1]:80:80' "
	  "(port must be 1 to 65535)\n" },
	{ "[server]\nlisten = [0000:0000:0000:0000:0000:0000:0000:0001]:"
	  "800000000000000000000000001\n",
	  "x.ini:2: bad listen address '[0000:0000:0000:0000:0000:0000:0000:"
	  "0001]:800000000000000000000000001' (too long)\n" },
	{ "[server]\nlisten = 127.0.0.1:80,\n",
	  "x.ini:2: empty item in 'listen'\n" },
	{ "[server]\nlisten =\n",
	  "x.ini:2: empty item in 'listen'\n" },
	{ "[server]\nlisten = *:80, 0.0.0.0:80\n",
	  "x.ini:2: duplicate listen address '0.0.0.0:80'\n" },
	{ "[server]\nlisten = localhost:80, 127.0.0.1:80\n",
	  "x.ini:2: duplicate listen address '127.0.0.1:80'\n" },
	{ "[server]\nlisten = [::1]:80, [0:0::1]:80\n",
	  "x.ini:2: duplicate listen address '[0:0::1]:80'\n" },
	{ "[server]\nlisten = 127.0.0.1:9000\n[admin]\n"
	  "listen = 127.0.0.1:9001, 127.0.0.1:9000\n",
	  "x.ini:4: listen address '127.0.0.1:9000' is used by both [server] "
	  "and [admin]\n" },
	{ "[server]\nlisten = 127.0.0.1:9901\n",
	  "x.ini:2: listen address '127.0.0.1:9901' is used by both [server] "
	  "and [admin]\n" },

	/* upstream url, http2, ca_file */
	{ "[upstream \"u\"]\nurl = ftp://a\n",
	  "x.ini:2: bad url 'ftp://a' (use http:// or https://)\n" },
	{ "[upstream \"u\"]\nurl = 127.0.0.1:9001\n",
	  "x.ini:2: bad url '127.0.0.1:9001' (use http:// or https://)\n" },
	{ "[upstream \"u\"]\nurl = http://user:pw@a/\n",
	  "x.ini:2: bad url 'http://user:pw@a/' (user info is not allowed)\n" },
	{ "[upstream \"u\"]\nurl = http://a/x?y=1\n",
	  "x.ini:2: bad url 'http://a/x?y=1' (a query is not allowed)\n" },
	{ "[upstream \"u\"]\nurl = http://a/x#top\n",
	  "x.ini:2: bad url 'http://a/x#top' (a fragment is not allowed)\n" },
	{ "[upstream \"u\"]\nurl = http://\n",
	  "x.ini:2: bad url 'http://' (missing host)\n" },
	{ "[upstream \"u\"]\nurl = http:///x\n",
	  "x.ini:2: bad url 'http:///x' (missing host)\n" },
	{ "[upstream \"u\"]\nurl = http://:80\n",
	  "x.ini:2: bad url 'http://:80' (missing host)\n" },
	{ "[upstream \"u\"]\nurl = http://a^b/\n",
	  "x.ini:2: bad url 'http://a^b/' (bad host)\n" },
	{ "[upstream \"u\"]\nurl = http://[::1/\n",
	  "x.ini:2: bad url 'http://[::1/' (bad host)\n" },
	{ "[upstream \"u\"]\nurl = http://[zz]/\n",
	  "x.ini:2: bad url 'http://[zz]/' (bad host)\n" },
	{ "[upstream \"u\"]\nurl = http://a:0\n",
	  "x.ini:2: bad url 'http://a:0' (bad port)\n" },
	{ "[upstream \"u\"]\nurl = http://a:65536/\n",
	  "x.ini:2: bad url 'http://a:65536/' (bad port)\n" },
	{ "[upstream \"u\"]\nurl = http://a:/\n",
	  "x.ini:2: bad url 'http://a:/' (bad port)\n" },
	{ "[upstream \"u\"]\nurl = http://a:8x\n",
	  "x.ini:2: bad url 'http://a:8x' (bad port)\n" },
	{ "[upstream \"u\"]\nurl = http://[::1]x/\n",
	  "x.ini:2: bad url 'http://[::1]x/' (bad port)\n" },
	{ "[upstream \"u\"]\nurl = http://a/b c\n",
	  "x.ini:2: bad url 'http://a/b c' "
	  "(spaces and control characters are not allowed)\n" },
	{ "[upstream \"u\"]\nurl = http://a\nhttp2 = on\n",
	  "x.ini:3: http2 = on needs an https:// url "
	  "(use prior-knowledge for h2c)\n" },
	{ "[upstream \"u\"]\nhttp2 = on\nurl = http://a\n",
	  "x.ini:2: http2 = on needs an https:// url "
	  "(use prior-knowledge for h2c)\n" },
	{ UPSTREAM_U "ca_file = /nonexistent/ca.pem\n",
	  "x.ini:3: cannot use ca_file '/nonexistent/ca.pem': "
	  "No such file or directory\n" },
	{ UPSTREAM_U "ca_file = /\n",
	  "x.ini:3: cannot use ca_file '/': not a regular file\n" },

	/* routes */
	{ UPSTREAM_U "[route \"r\"]\nmatch = api\nupstreams = u\n",
	  "x.ini:4: bad match 'api' (a path starting with '/', "
	  "without '?', '#' or spaces)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /a?b\nupstreams = u\n",
	  "x.ini:4: bad match '/a?b' (a path starting with '/', "
	  "without '?', '#' or spaces)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /a b\nupstreams = u\n",
	  "x.ini:4: bad match '/a b' (a path starting with '/', "
	  "without '?', '#' or spaces)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch =\nupstreams = u\n",
	  "x.ini:4: bad match '' (a path starting with '/', "
	  "without '?', '#' or spaces)\n" },
	{ UPSTREAM_U "[route \"a\"]\nmatch = /x\nupstreams = u\n"
	  "[route \"b\"]\nupstreams = u\nmatch = /x\n",
	  "x.ini:8: duplicate match '/x' (first in route 'a' at line 4)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n"
	  "methods = GET, get\n",
	  "x.ini:6: bad method 'get' for 'methods' "
	  "(use GET, HEAD, POST, PUT, DELETE, PATCH or OPTIONS)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n"
	  "methods = CONNECT\n",
	  "x.ini:6: bad method 'CONNECT' for 'methods' "
	  "(use GET, HEAD, POST, PUT, DELETE, PATCH or OPTIONS)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n"
	  "methods = GET HEAD\n",
	  "x.ini:6: bad method 'GET HEAD' for 'methods' "
	  "(use GET, HEAD, POST, PUT, DELETE, PATCH or OPTIONS)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n"
	  "methods = GET, POST, GET\n",
	  "x.ini:6: duplicate method 'GET' in 'methods'\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n"
	  "methods = GET,,POST\n",
	  "x.ini:6: empty item in 'methods'\n" },
	{ "\n\n\n\n\n\n\n\n\n\n[route \"r\"]\nupstreams = nope\nmatch = /\n",
	  "x.ini:12: route 'r' names unknown upstream 'nope'\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u, U\n",
	  "x.ini:5: route 'r' names unknown upstream 'U'\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u, u\n",
	  "x.ini:5: route 'r' lists upstream 'u' twice\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u,\n",
	  "x.ini:5: empty item in 'upstreams'\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams =\n",
	  "x.ini:5: empty item in 'upstreams'\n" },
	/* An upstream in a bad section is not defined. */
	{ "[upstream \"u\"] x\nurl = http://a\n"
	  "[route \"r\"]\nmatch = /\nupstreams = u\n",
	  "x.ini:1: syntax error: unexpected text after ']'\n"
	  "x.ini:5: route 'r' names unknown upstream 'u'\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\nquorum = 2\n",
	  "x.ini:6: 'quorum' out of range: '2' (1 to 1)\n" },
	{ UPSTREAM_U "[route \"r\"]\nquorum = 0\nmatch = /\nupstreams = u\n",
	  "x.ini:4: 'quorum' out of range: '0' (1 to 1000000)\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\nquorum = x\n",
	  "x.ini:6: bad number 'x' for 'quorum'\n" },
	{ UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n"
	  "quorum = 1000001\n",
	  "x.ini:6: 'quorum' out of range: '1000001' (1 to 1000000)\n" },
	/* TLS: an address needs a certificate and key, and they an address. */
	{ "[server]\nlisten = 127.0.0.1:8443 tls\n" UPSTREAM_U,
	  "x.ini:2: a listen address with 'tls' needs tls_cert and tls_key\n" },
	{ "[server]\nlisten = 127.0.0.1:8443\n\ntls_cert = /etc/passwd\n"
	  "tls_key = /etc/passwd\n" UPSTREAM_U,
	  "x.ini:4: tls_cert and tls_key need a listen address with 'tls'\n" },
	{ "[server]\nlisten = 127.0.0.1:8443 tls\ntls_cert = /nonexistent\n"
	  UPSTREAM_U,
	  "x.ini:3: cannot use tls_cert '/nonexistent': No such file or "
	  "directory\n" },
	{ "[admin]\nlisten = 127.0.0.1:9901 tls\n" UPSTREAM_U,
	  "x.ini:2: tls is not supported on the admin listener: "
	  "'127.0.0.1:9901'\n" },
	{ "[server]\nlisten = 127.0.0.1:8443 tls, 127.0.0.1:8443\n" UPSTREAM_U,
	  "x.ini:2: duplicate listen address '127.0.0.1:8443'\n"
	  "x.ini:2: a listen address with 'tls' needs tls_cert and tls_key\n" },
	{ "[server]\nh2_max_concurrent_streams = 0\n" UPSTREAM_U,
	  "x.ini:2: 'h2_max_concurrent_streams' out of range: '0' "
	  "(1 to 10000)\n" },
	{ "[server]\nh2_stream_window = 2g\n" UPSTREAM_U,
	  "x.ini:2: 'h2_stream_window' out of range: '2g' (1k to 1g)\n" },
	{ "[server]\nhttp2 = maybe\n" UPSTREAM_U,
	  "x.ini:2: bad boolean 'maybe' for 'http2' (use yes or no)\n" },
};

static void
test_bad(void **state)
{
	const struct bad_case	*c = *state;

	expect_errors(c->text, c->errors);
}

/* ---- several errors, in line order ----------------------------------- */

static void
test_many_errors(void **state)
{
	(void)state;
	expect_errors(
	    "[route \"r\"]\n"				/* 1 */
	    "upstreams = a, nope\n"			/* 2 */
	    "mode = fastest\n"				/* 3 */
	    "[server]\n"				/* 4 */
	    "listn = 127.0.0.1:8080\n"			/* 5 */
	    "workers = many\n"				/* 6 */
	    "workers = 2\n"				/* 7 */
	    "header_timeout = 5x\n"			/* 8 */
	    "[upstream \"a\"]\n"			/* 9 */
	    "timeout = 0s\n"				/* 10 */
	    "[bogus]\n"					/* 11 */
	    "whatever = 1\n"				/* 12 */
	    "[upstream \"a\"]\n"			/* 13 */
	    "url = http://a\n"				/* 14 */
	    "garbage\n",				/* 15 */
	    "x.ini:1: missing key 'match' in [route \"r\"]\n"
	    "x.ini:2: route 'r' names unknown upstream 'nope'\n"
	    "x.ini:3: bad value 'fastest' for 'mode' "
	    "(use proxy, all, first, hedge or quorum)\n"
	    "x.ini:5: unknown key 'listn' in [server]\n"
	    "x.ini:6: bad number 'many' for 'workers'\n"
	    "x.ini:7: duplicate key 'workers' in [server] (first at line 6)\n"
	    "x.ini:8: bad duration '5x' for 'header_timeout' "
	    "(use ms, s, m or h)\n"
	    "x.ini:9: missing key 'url' in [upstream \"a\"]\n"
	    "x.ini:10: 'timeout' out of range: '0s' (1ms to 24h)\n"
	    "x.ini:11: unknown section [bogus]\n"
	    "x.ini:13: duplicate upstream 'a' (first at line 9)\n"
	    "x.ini:15: syntax error: expected 'key = value'\n");
}

/* ---- line length ----------------------------------------------------- */

static void
test_long_lines(void **state)
{
	struct config	*cfg;
	char		*text, *errors, *end, want[128];
	unsigned long	 max;
	size_t		 size = 20000, off;

	(void)state;
	assert_non_null(text = malloc(size));

	/* Far too long: reported, and the next line keeps its number. */
	off = (size_t)snprintf(text, size, "[server]\naccess_log = /");
	memset(text + off, 'a', 10000);
	off += 10000;
	snprintf(text + off, size - off, "\nlistn = 1\n");
	assert_null(config_load_string("x.ini", text, &errors));
	assert_non_null(errors);
	assert_true(strncmp(errors, "x.ini:2: line too long (more than ",
	    34) == 0);
	max = strtoul(errors + 34, &end, 10);
	assert_string_equal(end, " characters)\n"
	    "x.ini:3: unknown key 'listn' in [server]\n");
	free(errors);
#if defined(HAVE_DECL_INI_MAX_LINE) && HAVE_DECL_INI_MAX_LINE
	assert_int_equal(max, 4096);
#endif
	assert_true(max >= 100 && max < 10000);

	/*
	 * Exactly the limit loads, whole; one more does not. (A URL: an
	 * access_log that long would be checked as a file name.)
	 */
	off = (size_t)snprintf(text, size, "[upstream \"u\"]\n  url = http://h/");
	memset(text + off, 'b', max - (off - 15));
	off += max - (off - 15);
	snprintf(text + off, size - off, "\r\n" ROUTE_U);
	cfg = load_ok(text);
	assert_int_equal(strlen(cfg->upstreams[0]->url), max - 8);
	assert_int_equal(cfg->nroutes, 1);
	config_unref(cfg);

	text[off] = 'b';
	snprintf(text + off + 1, size - off - 1, "\r\n" ROUTE_U);
	snprintf(want, sizeof want, "x.ini:1: missing key 'url' in "
	    "[upstream \"u\"]\n"
	    "x.ini:2: line too long (more than %lu characters)\n", max);
	expect_errors(text, want);

	/* A long section header: the keys under it are not taken elsewhere. */
	off = (size_t)snprintf(text, size, "[server]\n[route \"");
	memset(text + off, 'c', 10000);
	off += 10000;
	snprintf(text + off, size - off, "\"]\nmatch = /\n");
	snprintf(want, sizeof want, "x.ini:2: line too long (more than %lu "
	    "characters)\n", max);
	expect_errors(text, want);

	free(text);
}

/* ---- files ----------------------------------------------------------- */

static void
test_load_file(void **state)
{
	struct config	*cfg;
	char		 path[256], want[1024], *errors = (char *)1;
	FILE		*f;

	(void)state;
	snprintf(path, sizeof path, "%s/fanoutd.ini", tmpdir);
	assert_non_null(f = fopen(path, "w"));
	fputs("[server]\nlisten = 127.0.0.1:18080\nworkers = 3\n"
	    UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n", f);
	fclose(f);
	cfg = config_load(path, &errors);
	assert_non_null(cfg);
	assert_null(errors);
	assert_string_equal(cfg->path, path);
	assert_int_equal(cfg->workers, 3);
	assert_string_equal(cfg->listen[0].text, "127.0.0.1:18080");
	assert_int_equal(cfg->nroutes, 1);
	config_unref(cfg);

	/* Errors name the file. */
	assert_non_null(f = fopen(path, "w"));
	fputs("[server]\nlistn = 1\n", f);
	fclose(f);
	assert_null(config_load(path, &errors));
	assert_non_null(errors);
	assert_true(strncmp(errors, path, strlen(path)) == 0);
	assert_string_equal(errors + strlen(path),
	    ":2: unknown key 'listn' in [server]\n");
	free(errors);

	/* A NUL byte is reported, not taken for the end of the file. */
	assert_non_null(f = fopen(path, "w"));
	fwrite("[server]\nworkers = 1\0\nlistn = 1\n", 1, 32, f);
	fclose(f);
	assert_null(config_load(path, &errors));
	snprintf(want, sizeof want, "%s:2: NUL character in line\n"
	    "%s:3: unknown key 'listn' in [server]\n", path, path);
	assert_string_equal(errors, want);
	free(errors);
	unlink(path);

	/* errors may be NULL. */
	assert_null(config_load(path, NULL));
	assert_null(config_load_string("x.ini", "[x]\n", NULL));
}

static void
test_load_missing(void **state)
{
	char	*errors = NULL, path[256];

	(void)state;
	assert_null(config_load("/nonexistent/fanoutd.ini", &errors));
	assert_string_equal(errors, "/nonexistent/fanoutd.ini: cannot open: "
	    "No such file or directory\n");
	free(errors);

	snprintf(path, sizeof path, "%s", tmpdir);
	assert_null(config_load(path, &errors));
	assert_true(strncmp(errors, path, strlen(path)) == 0);
	assert_string_equal(errors + strlen(path),
	    ": cannot read: Is a directory\n");
	free(errors);
}

static void
test_refs(void **state)
{
	struct config	*cfg;

	(void)state;
	cfg = load_ok(UPSTREAM_U "[route \"r\"]\nmatch = /\nupstreams = u\n");
	assert_ptr_equal(config_ref(cfg), cfg);
	assert_int_equal(cfg->refs, 2);
	config_unref(cfg);
	assert_int_equal(cfg->refs, 1);
	/* The route outlives nothing: valgrind checks the last unref. */
	config_unref(cfg);
	config_unref(NULL);
}

static int
setup(void **state)
{
	(void)state;
	return (mkdtemp(tmpdir) == NULL ? -1 : 0);
}

static int
teardown(void **state)
{
	(void)state;
	return (rmdir(tmpdir));
}

/* A self-signed certificate and its key, as PEM files. */
static void
make_cert(const char *cert, const char *key)
{
	EVP_PKEY	*pk;
	X509		*x;
	X509_NAME	*n;
	FILE		*f;

	assert_non_null(pk = EVP_EC_gen("P-256"));
	assert_non_null(x = X509_new());
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, pk);
	n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	    (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, n);
	assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
	assert_non_null(f = fopen(cert, "w"));
	assert_int_equal(PEM_write_X509(f, x), 1);
	fclose(f);
	assert_non_null(f = fopen(key, "w"));
	assert_int_equal(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL,
	    NULL), 1);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(pk);
}

/* "ADDR tls" terminates TLS; the certificate and key go together. */
static void
test_tls_listen(void **state)
{
	struct config	*cfg;
	char		 text[1024], cert[256], key[256], cert2[256], key2[256];
	char		*errors = NULL;

	snprintf(cert, sizeof cert, "%s/cert.pem", tmpdir);
	snprintf(key, sizeof key, "%s/key.pem", tmpdir);
	snprintf(cert2, sizeof cert2, "%s/cert2.pem", tmpdir);
	snprintf(key2, sizeof key2, "%s/key2.pem", tmpdir);
	make_cert(cert, key);
	make_cert(cert2, key2);

	snprintf(text, sizeof text, "[server]\nlisten = 127.0.0.1:8080, "
	    "127.0.0.1:8443 tls, [::1]:8443  TLS\ntls_cert = %s\n"
	    "tls_key = %s\n" UPSTREAM_U ROUTE_U, cert, key);
	cfg = load_ok(text);
	assert_int_equal(cfg->nlisten, 3);
	assert_in4(&cfg->listen[0], "127.0.0.1", 8080, "127.0.0.1:8080");
	assert_int_equal(cfg->listen[0].tls, 0);
	assert_in4(&cfg->listen[1], "127.0.0.1", 8443, "127.0.0.1:8443");
	assert_int_equal(cfg->listen[1].tls, 1);
	assert_in6(&cfg->listen[2], "::1", 8443, "[::1]:8443");
	assert_int_equal(cfg->listen[2].tls, 1);
	assert_string_equal(cfg->tls_cert, cert);
	assert_non_null(cfg->tls_ctx);
	config_unref(cfg);

	/* A key that is not the certificate's. */
	snprintf(text, sizeof text, "[server]\nlisten = 127.0.0.1:8443 tls\n"
	    "tls_cert = %s\ntls_key = %s\n" UPSTREAM_U ROUTE_U, cert, key2);
	assert_null(config_load_string("x.ini", text, &errors));
	assert_non_null(errors);
	assert_non_null(strstr(errors, "x.ini:4: tls_key '"));
	assert_non_null(strstr(errors, "' does not match tls_cert '"));
	free(errors);

	/* Not PEM at all: OpenSSL's reason, at the key's line. */
	snprintf(text, sizeof text, "[server]\nlisten = 127.0.0.1:8443 tls\n"
	    "tls_cert = %s\ntls_key = %s\n" UPSTREAM_U ROUTE_U, key, key);
	assert_null(config_load_string("x.ini", text, &errors));
	assert_non_null(errors);
	assert_non_null(strstr(errors, "x.ini:3: cannot load tls_cert '"));
	free(errors);

	assert_int_equal(unlink(cert), 0);
	assert_int_equal(unlink(key), 0);
	assert_int_equal(unlink(cert2), 0);
	assert_int_equal(unlink(key2), 0);
}

/* tls_min_version and tls_ciphers (SPEC section 2). */
static void
test_tls_keys(void **state)
{
	struct config	*cfg;
	char		 text[1024], cert[256], key[256];

	(void)state;
	snprintf(cert, sizeof cert, "%s/cert.pem", tmpdir);
	snprintf(key, sizeof key, "%s/key.pem", tmpdir);
	make_cert(cert, key);

	snprintf(text, sizeof text, "[server]\nlisten = 127.0.0.1:8443 tls\n"
	    "tls_cert = %s\ntls_key = %s\n" UPSTREAM_U ROUTE_U, cert, key);
	cfg = load_ok(text);
	assert_int_equal(cfg->tls_min_version, TLS_MIN_1_2);
	assert_null(cfg->tls_ciphers);
	assert_non_null(cfg->tls_ctx);
	assert_null(cfg->warnings);
	config_unref(cfg);

	snprintf(text, sizeof text, "[server]\nlisten = 127.0.0.1:8443 tls\n"
	    "tls_cert = %s\ntls_key = %s\ntls_min_version = 1.3\n"
	    "tls_ciphers =\n" UPSTREAM_U ROUTE_U, cert, key);
	cfg = load_ok(text);
	assert_int_equal(cfg->tls_min_version, TLS_MIN_1_3);
	assert_null(cfg->tls_ciphers);
	assert_null(cfg->warnings);
	config_unref(cfg);

	snprintf(text, sizeof text, "[server]\nlisten = 127.0.0.1:8443 tls\n"
	    "tls_cert = %s\ntls_key = %s\n"
	    "tls_ciphers = ECDHE-ECDSA-AES256-GCM-SHA384  # one\n"
	    UPSTREAM_U ROUTE_U, cert, key);
	cfg = load_ok(text);
	assert_string_equal(cfg->tls_ciphers, "ECDHE-ECDSA-AES256-GCM-SHA384");
	config_unref(cfg);

	/* TLS 1.2 suites with TLS 1.3 only; either without a tls address. */
	snprintf(text, sizeof text, "[server]\nlisten = 127.0.0.1:8443 tls\n"
	    "tls_cert = %s\ntls_key = %s\ntls_min_version = 1.3\n"
	    "tls_ciphers = HIGH\n" UPSTREAM_U ROUTE_U, cert, key);
	cfg = load_ok(text);
	assert_string_equal(cfg->warnings, "t.ini:6: warning: key "
	    "'tls_ciphers' has no effect with tls_min_version = 1.3\n");
	config_unref(cfg);
	cfg = load_ok("[server]\ntls_ciphers = HIGH\ntls_min_version = 1.3\n"
	    UPSTREAM_U ROUTE_U);
	assert_string_equal(cfg->warnings,
	    "t.ini:2: warning: key 'tls_ciphers' has no effect without a "
	    "listen address with 'tls'\n"
	    "t.ini:3: warning: key 'tls_min_version' has no effect without a "
	    "listen address with 'tls'\n");
	config_unref(cfg);

	/* Checked at load, tls address or not. */
	expect_errors("[server]\ntls_ciphers = NO-SUCH-SUITE:ALSO-NOT\n"
	    "tls_min_version = 1.1\n" UPSTREAM_U ROUTE_U,
	    "x.ini:2: bad tls_ciphers 'NO-SUCH-SUITE:ALSO-NOT' (no cipher "
	    "suite that OpenSSL knows)\n"
	    "x.ini:3: bad value '1.1' for 'tls_min_version' (use 1.2 or 1.3)\n");
	snprintf(text, sizeof text, "[server]\nlisten = 127.0.0.1:8443 tls\n"
	    "tls_cert = %s\ntls_key = %s\ntls_ciphers = FOO\n"
	    UPSTREAM_U ROUTE_U, cert, key);
	expect_errors(text, "x.ini:5: bad tls_ciphers 'FOO' (no cipher suite "
	    "that OpenSSL knows)\n");

	assert_int_equal(unlink(cert), 0);
	assert_int_equal(unlink(key), 0);
}

static void
test_h2_keys(void **state)
{
	struct config	*cfg;

	cfg = load_ok(UPSTREAM_U ROUTE_U);
	assert_int_equal(cfg->http2, 1);
	assert_int_equal(cfg->h2_max_streams, 128);
	assert_int_equal(cfg->h2_stream_window, 64 * 1024);
	assert_int_equal(cfg->h2_connection_window, 1024 * 1024);
	assert_null(cfg->tls_ctx);
	config_unref(cfg);

	cfg = load_ok("[server]\nhttp2 = off\nh2_max_concurrent_streams = 7\n"
	    "h2_stream_window = 1m\nh2_connection_window = 2m\n" UPSTREAM_U
	    ROUTE_U);
	assert_int_equal(cfg->http2, 0);
	assert_int_equal(cfg->h2_max_streams, 7);
	assert_int_equal(cfg->h2_stream_window, 1024 * 1024);
	assert_int_equal(cfg->h2_connection_window, 2 * 1024 * 1024);
	config_unref(cfg);
}
static void
test_servers(void **state)
{
	struct config		*cfg, *again;
	struct upstream_conf	*u;
	unsigned		 seen[3] = { 0, 0, 0 };
	size_t			 i;

	/* url is the one-server case, with every default. */
	cfg = load_ok(UPSTREAM_U ROUTE_U);
	u = cfg->upstreams[0];
	assert_int_equal(u->nservers, 1);
	assert_string_equal(u->servers[0].url, "http://127.0.0.1:9001");
	assert_int_equal(u->servers[0].weight, 1);
	assert_non_null(u->servers[0].st);
	assert_int_equal(u->balance, BALANCE_ROUND_ROBIN);
	assert_int_equal(u->dns_ttl_ms, 60000);
	assert_int_equal(u->eject_after, 5);
	assert_int_equal(u->eject_time_ms, 30000);
	assert_int_equal(u->eject_time_max_ms, 300000);
	assert_int_equal(u->max_ejected, 1);	/* 50% of 1, at least 1 */
	assert_null(u->health_check);
	assert_int_equal(u->health_interval_ms, 5000);
	assert_int_equal(u->health_timeout_ms, 1000);
	assert_int_equal(u->health_rise, 2);
	assert_int_equal(u->health_fall, 3);
	assert_int_equal(cfg->routes[0]->repeat_unsafe, 0);
	assert_int_equal(cfg->routes[0]->budget_pct, 20);
	assert_int_equal(cfg->routes[0]->budget_min, 10);
	assert_non_null(cfg->routes[0]->st);
	config_unref(cfg);

	cfg = load_ok("[upstream \"u\"]\nservers = http://a:1/ weight=5, "
	    "http://b:2,http://c:3   weight=1\nbalance = least_request\n"
	    "max_ejected = 2\nhealth_check = /health\ndns_ttl = 0s\n"
	    "[route \"r\"]\nmatch = /\nupstreams = u\nrepeat_unsafe = yes\n"
	    "budget = 150%\nbudget_min = 0\n");
	u = cfg->upstreams[0];
	assert_int_equal(u->nservers, 3);
	assert_string_equal(u->url, "http://a:1");
	assert_string_equal(u->servers[0].url, "http://a:1");
	assert_string_equal(u->servers[2].url, "http://c:3");
	assert_int_equal(u->servers[0].weight, 5);
	assert_int_equal(u->servers[1].weight, 1);
	assert_int_equal(u->balance, BALANCE_LEAST_REQUEST);
	assert_int_equal(u->max_ejected, 2);
	assert_string_equal(u->health_check, "/health");
	assert_int_equal(u->dns_ttl_ms, 0);
	assert_int_equal(cfg->routes[0]->repeat_unsafe, 1);
	assert_int_equal(cfg->routes[0]->budget_pct, 150);
	assert_int_equal(cfg->routes[0]->budget_min, 0);
	/* Smooth weighted round robin: 5, 1, 1 is a a b a c a a. */
	assert_int_equal(u->nturns, 7);
	for (i = 0; i < u->nturns; i++)
		seen[u->turns[i]]++;
	assert_int_equal(seen[0], 5);
	assert_int_equal(seen[1], 1);
	assert_int_equal(seen[2], 1);
	assert_int_equal(u->turns[0], 0);
	assert_int_equal(u->turns[1], 0);
	assert_int_equal(u->turns[2], 1);
	assert_int_equal(u->turns[3], 0);
	assert_int_equal(u->turns[4], 2);

	/* A second load of the same servers and route shares their state
	 * (a reload keeps it); another upstream name does not. */
	again = load_ok("[upstream \"u\"]\nservers = http://c:3, "
	    "http://a:1\n[upstream \"v\"]\nurl = http://a:1\n"
	    "[route \"r\"]\nmatch = /\nupstreams = u, v\n");
	assert_ptr_equal(again->upstreams[0]->servers[0].st, u->servers[2].st);
	assert_ptr_equal(again->upstreams[0]->servers[1].st, u->servers[0].st);
	assert_ptr_not_equal(again->upstreams[1]->servers[0].st,
	    u->servers[0].st);
	assert_ptr_equal(again->routes[0]->st, cfg->routes[0]->st);
	/* 50% of 2 servers: 1. */
	assert_int_equal(again->upstreams[0]->max_ejected, 1);
	config_unref(cfg);
	config_unref(again);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_servers),
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_spec_example),
		cmocka_unit_test(test_syntax),
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_workers_auto),
		cmocka_unit_test(test_bools),
		cmocka_unit_test(test_urls),
		cmocka_unit_test(test_quorum_default),
		cmocka_unit_test(test_methods),
		cmocka_unit_test(test_mode_names),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_listen_parse),
		cmocka_unit_test(test_listen_list),
		cmocka_unit_test(test_route_lookup),
		cmocka_unit_test(test_tls_listen),
		cmocka_unit_test(test_h2_keys),
		cmocka_unit_test(test_tls_keys),
		cmocka_unit_test(test_inline_comments),
		cmocka_unit_test(test_mode_key_warnings),
		cmocka_unit_test(test_no_route),
		cmocka_unit_test(test_access_log),
		cmocka_unit_test(test_many_errors),
		cmocka_unit_test(test_long_lines),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_load_missing),
		cmocka_unit_test(test_refs),
	};
	enum { NBAD = sizeof bad_cases / sizeof bad_cases[0] };
	struct CMUnitTest	 bad[NBAD];
	char			 names[NBAD][32];
	size_t			 i;
	int			 failed;

	/* One test per bad case, so a failure names it. */
	for (i = 0; i < NBAD; i++) {
		snprintf(names[i], sizeof names[i], "test_bad_%02zu", i);
		memset(&bad[i], 0, sizeof bad[i]);
		bad[i].name = names[i];
		bad[i].test_func = test_bad;
		bad[i].initial_state = (void *)&bad_cases[i];
	}
	failed = cmocka_run_group_tests_name("config", tests, setup, teardown);
	failed += _cmocka_run_group_tests("config_errors", bad, NBAD, NULL,
	    NULL);
	return (failed != 0);
}
