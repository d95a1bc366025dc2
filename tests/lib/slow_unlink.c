/*
 * slow_unlink.c - an LD_PRELOAD shim for tests: every unlinkat() sleeps
 * RQ_SLOW_UNLINK_US microseconds (default 10,000) first, as on a disk
 * that removes files slowly (ext4 without a journal mounted `discard`
 * waits for each freed block's discard; design.md, "A seventh round").
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

int unlinkat(int dirfd, const char *path, int flags);

int
unlinkat(int dirfd, const char *path, int flags)
{
	static int (*real)(int, const char *, int);
	const char *us = getenv("RQ_SLOW_UNLINK_US");

	if (real == NULL)
		*(void **)&real = dlsym(RTLD_NEXT, "unlinkat");
	usleep(us != NULL ? (useconds_t)atoi(us) : 10000);
	return real(dirfd, path, flags);
}
