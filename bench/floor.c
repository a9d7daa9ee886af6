/*
 * bench/floor.c - the libcurl floor: what one keep-alive GET costs libcurl alone.
 *
 *   floor [-n HANDLES] [-d SECONDS] [-w WARMUP] [-l HEADER_LINES] [-u] URL [URL ...]
 *
 * A bare libcurl multi loop, no event library and no front end: HANDLES easy
 * handles (64), handle i on URL i mod the number of URLs; each one goes back into
 * the multi handle as soon as its GET is done, so its connection is reused
 * (keep-alive) and HANDLES transfers are always in flight.  The loop is
 * curl_multi_perform + curl_multi_poll.  Every handle sends HEADER_LINES (6, at
 * most 6) of the lines fanoutd adds to a proxied GET: X-Forwarded-Host,
 * X-Forwarded-For, X-Forwarded-Proto, X-Request-Id, X-Request-Deadline-Ms, and
 * "Accept:" (which removes curl's own Accept line).  The list is built once.
 *
 * -u drives curl as fanoutd does since issue 22: each URL's origin as a CURLU
 * parsed once (CURLOPT_CURLU) and its path as CURLOPT_REQUEST_TARGET, set
 * again for every transfer, instead of CURLOPT_URL, which curl parses again
 * for every transfer. The default stays the plain way, the floor the issue
 * defines.
 *
 * After WARMUP seconds (1) it measures SECONDS (5) of transfers and prints one JSON
 * line: transfers, failures, user and system CPU of this process (getrusage) and
 * CPU microseconds per transfer.  Built at bench time by bench/lib.sh (build_floor)
 * against the libcurl pkg-config finds, the one fanoutd is built against.
 */
#include <curl/curl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static const char *const fwd_lines[] = {
	"X-Forwarded-Host: 127.0.0.1:25090",
	"X-Forwarded-For: 127.0.0.1",
	"X-Forwarded-Proto: http",
	"X-Request-Id: 5f0c6e1a9b2d4c7e",
	"X-Request-Deadline-Ms: 60000",
	"Accept:",
};

static size_t
discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return (size * n);
}

static double
mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (ts.tv_sec + ts.tv_nsec * 1e-9);
}

static void
usage_of(double *user, double *sys)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	*user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6;
	*sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

int
main(int argc, char **argv)
{
	struct curl_slist *lines = NULL;
	CURLM *multi;
	CURLMsg *m;
	double secs = 5, warm = 1, t_start, t0 = 0, t1, u0 = 0, s0 = 0, u1, s1;
	long handles = 64, nlines = 6, done = 0, failed = 0, done0 = 0,
	    failed0 = 0, code, i;
	int c, nurls, running, left, measuring = 0, use_curlu = 0;

	while ((c = getopt(argc, argv, "n:d:w:l:u")) != -1) {
		switch (c) {
		case 'n': handles = atol(optarg); break;
		case 'd': secs = atof(optarg); break;
		case 'w': warm = atof(optarg); break;
		case 'l': nlines = atol(optarg); break;
		case 'u': use_curlu = 1; break;
		default: goto usage;
		}
	}
	nurls = argc - optind;
	if (nurls < 1 || handles < 1 || secs <= 0 || warm < 0 || nlines < 0 ||
	    nlines > (long)(sizeof(fwd_lines) / sizeof(fwd_lines[0])))
		goto usage;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
	    (multi = curl_multi_init()) == NULL)
		return (1);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, handles * 2);
	for (i = 0; i < nlines; i++)
		lines = curl_slist_append(lines, fwd_lines[i]);
	for (i = 0; i < handles; i++) {
		CURL *e = curl_easy_init();

		if (e == NULL)
			return (1);
		if (use_curlu) {
			const char *url = argv[optind + i % nurls], *path;
			char *origin, *target;
			CURLU *cu;

			if ((path = strstr(url, "://")) == NULL)
				goto usage;
			path += 3 + strcspn(path + 3, "/?#");
			origin = strndup(url, path - url);
			target = strdup(*path != '\0' ? path : "/");
			if (origin == NULL || target == NULL ||
			    (cu = curl_url()) == NULL ||
			    curl_url_set(cu, CURLUPART_URL, origin, 0) != CURLUE_OK)
				return (1);
			curl_easy_setopt(e, CURLOPT_CURLU, cu);
			curl_easy_setopt(e, CURLOPT_REQUEST_TARGET, target);
			curl_easy_setopt(e, CURLOPT_PRIVATE, target);
		} else
			curl_easy_setopt(e, CURLOPT_URL, argv[optind + i % nurls]);
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
		curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
		if (lines != NULL)
			curl_easy_setopt(e, CURLOPT_HTTPHEADER, lines);
		curl_multi_add_handle(multi, e);
	}

	t_start = mono();
	for (;;) {
		curl_multi_perform(multi, &running);
		while ((m = curl_multi_info_read(multi, &left)) != NULL) {
			if (m->msg != CURLMSG_DONE)
				continue;
			code = 0;
			curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE,
			    &code);
			if (m->data.result != CURLE_OK || code != 200)
				failed++;
			done++;
			/* again, on the same (kept-alive) connection */
			curl_multi_remove_handle(multi, m->easy_handle);
			if (use_curlu) {
				/* set for each transfer, as fanoutd does */
				char *target = NULL;

				curl_easy_getinfo(m->easy_handle,
				    CURLINFO_PRIVATE, &target);
				curl_easy_setopt(m->easy_handle,
				    CURLOPT_REQUEST_TARGET, target);
			}
			curl_multi_add_handle(multi, m->easy_handle);
		}
		t1 = mono();
		if (!measuring && t1 - t_start >= warm) {
			measuring = 1;
			t0 = t1;
			usage_of(&u0, &s0);
			done0 = done;
			failed0 = failed;
		} else if (measuring && t1 - t0 >= secs)
			break;
		curl_multi_poll(multi, NULL, 0, 100, NULL);
	}
	usage_of(&u1, &s1);
	done -= done0;
	failed -= failed0;
	printf("{\"curl\": \"%s\", \"handles\": %ld, \"header_lines\": %ld, "
	    "\"urls\": %d, \"seconds\": %.3f, \"transfers\": %ld, \"failed\": %ld, "
	    "\"user_us\": %.0f, \"sys_us\": %.0f, \"transfers_per_s\": %.0f, "
	    "\"cpu_us_per_transfer\": %.2f}\n",
	    curl_version_info(CURLVERSION_NOW)->version, handles, nlines, nurls,
	    t1 - t0, done, failed, (u1 - u0) * 1e6, (s1 - s0) * 1e6,
	    done / (t1 - t0),
	    done ? ((u1 - u0) + (s1 - s0)) * 1e6 / done : 0.0);
	return (done == 0 || failed == done ? 1 : 0);

usage:
	fprintf(stderr, "usage: floor [-n handles] [-d seconds] [-w warmup] "
	    "[-l header_lines 0..6] [-u] URL [URL ...]\n");
	return (2);
}
