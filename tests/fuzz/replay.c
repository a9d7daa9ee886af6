/*
 * replay.c: run a fuzz target over files, without libFuzzer, so that the
 * seed corpus and every crash input ever found stay a test in make check.
 *
 *	replay_request FILE|DIR ...
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int	LLVMFuzzerInitialize(int *, char ***) __attribute__((weak));
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static int
replay_file(const char *path)
{
	FILE		*f;
	uint8_t		*buf;
	long		 len;

	if ((f = fopen(path, "rb")) == NULL) {
		perror(path);
		return (-1);
	}
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	if (len < 0 || (buf = malloc(len ? len : 1)) == NULL ||
	    fread(buf, 1, len, f) != (size_t)len) {
		fprintf(stderr, "%s: cannot read\n", path);
		fclose(f);
		return (-1);
	}
	fclose(f);
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	return (0);
}

int
main(int argc, char *argv[])
{
	struct dirent	*de;
	struct stat	 st;
	DIR		*d;
	char		 path[4096];
	int		 i, n = 0, bad = 0;

	if (LLVMFuzzerInitialize != NULL)
		LLVMFuzzerInitialize(&argc, &argv);
	for (i = 1; i < argc; i++) {
		if (stat(argv[i], &st) == -1) {
			perror(argv[i]);
			bad++;
			continue;
		}
		if (!S_ISDIR(st.st_mode)) {
			bad += replay_file(argv[i]) == -1;
			n++;
			continue;
		}
		if ((d = opendir(argv[i])) == NULL) {
			perror(argv[i]);
			bad++;
			continue;
		}
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof path, "%s/%s", argv[i], de->d_name);
			bad += replay_file(path) == -1;
			n++;
		}
		closedir(d);
	}
	printf("replayed %d inputs, %d unreadable\n", n, bad);
	return (bad ? 1 : 0);
}
