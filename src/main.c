/*
 * main.c: command line, start-up and exit status (fanoutd(8), OPTIONS and
 * EXIT STATUS).
 *
 *	0	clean shutdown
 *	1	usage or configuration error
 *	2	start-up failure (cannot bind, ...)
 */
#include "autoconf.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "accesslog.h"
#include "config.h"
#include "front.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "util.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONFIG	SYSCONFDIR "/fanoutd/fanoutd.ini"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: fanoutd [-c FILE] [-t] [-V] [-h]\n"
	    "  -c, --config FILE  configuration (default: %s)\n"
	    "  -t, --test         check the configuration and exit\n"
	    "  -V, --version      print the version and exit\n"
	    "  -h, --help         this help\n", DEFAULT_CONFIG);
}

/* Allow as many descriptors as the hard limit lets us: one per client
 * connection and one per upstream connection. */
static unsigned long
raise_nofile(void)
{
	struct rlimit	rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return (1024);
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
			log_warn("cannot raise the descriptor limit");
			getrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	return (rl.rlim_cur == RLIM_INFINITY ? 1048576 : (unsigned long)rl.rlim_cur);
}

int
main(int argc, char *argv[])
{
	static const struct option	 longopts[] = {
		{ "config",	required_argument,	NULL,	'c' },
		{ "test",	no_argument,		NULL,	't' },
		{ "version",	no_argument,		NULL,	'V' },
		{ "help",	no_argument,		NULL,	'h' },
		{ NULL,		0,			NULL,	0 }
	};
	const char			*path = DEFAULT_CONFIG;
	struct config			*conf;
	char				*errors = NULL;
	int				 ch, test = 0;
	unsigned long			 nofile;

	log_init();
	while ((ch = getopt_long(argc, argv, "c:tVh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test = 1;
			break;
		case 'V':
			/* stdout is the one line of the contract, "fanoutd
			 * VERSION", for scripts; the license goes to stderr so
			 * that $(fanoutd -V) stays that line. */
			printf("fanoutd %s\n", PACKAGE_VERSION);
			fflush(stdout);
			fprintf(stderr, "fanoutd is free software under the ISC "
			    "license (see the LICENSE file).\n");
			return (0);
		case 'h':
			usage(stdout);
			return (0);
		default:
			usage(stderr);
			return (1);
		}
	}
	if (optind != argc) {
		usage(stderr);
		return (1);
	}

	if ((conf = config_load(path, &errors)) == NULL) {
		/* Under ExecStartPre or ExecStart, journald files these as
		 * errors: "journalctl -p err" finds them. */
		log_text(LOG_LEVEL_ERROR, errors != NULL ? errors :
		    "configuration error\n");
		free(errors);
		return (1);
	}
	if (test) {
		/* Warnings do not fail the check: "ok" still follows. */
		if (conf->warnings != NULL)
			log_text(LOG_LEVEL_WARN, conf->warnings);
		printf("%s: ok\n", path);
		config_unref(conf);
		return (0);
	}

	log_set_level(conf->log_level);
	config_log_warnings(conf, "");
	signal(SIGPIPE, SIG_IGN);
	nofile = raise_nofile();
	/*
	 * The same malloc, realloc and free, and a calloc that goes through
	 * malloc's per-thread cache (zalloc): libcurl zeroes about a dozen
	 * blocks per transfer, libevent one or two per request. Set before
	 * either library allocates anything of the daemon's.
	 */
	event_set_mem_functions(malloc, realloc, free);
	if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, malloc, free, realloc,
	    strdup, zalloc) != CURLE_OK)
		fatalx("cannot initialise libcurl");
	/* Before any event_base: the main thread calls into workers' loops. */
	if (evthread_use_pthreads() == -1)
		fatalx("cannot set up libevent for threads");
	metrics_init();
	front_init();
	if (accesslog_open(conf->access_log) == -1)
		fatal("cannot open access log %s", conf->access_log);
	if (server_start(conf, nofile) == -1) {
		server_free();
		config_unref(conf);
		return (2);
	}
	config_unref(conf);
	log_info("fanoutd %s started config=%s pid=%ld", PACKAGE_VERSION,
	    path, (long)getpid());
	server_run();
	server_free();
	accesslog_close();
	curl_global_cleanup();
	log_info("fanoutd exiting");
	return (0);
}
