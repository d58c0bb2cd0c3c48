/*
 * rawread.c - the "raw C read of the inotify fd" baseline of the
 * django-inotifier benchmark (bench/run.py compiles it at run time).
 *
 * It speaks the same line protocol on stdout as the Python consumers
 * (bench/consumer.py):
 *
 *   READY <pid>          the watch is in place
 *   CYCLE <k> <t_ns>     drain mode: cycle k (0-based) fully received at t_ns
 *   RESULT <json>        final counters, then exit
 *
 * Usage:
 *   rawread stream <mode> <dir> <mask> <expected> <per_cycle>
 *                  <idle_ms> <start_timeout_ms> <hard_timeout_ms>
 *       mode is drain, burst or latency.  A file event counts once; a
 *       directory event (IN_ISDIR) is the harness's end sentinel; an
 *       IN_Q_OVERFLOW is counted.  In latency mode the file name is the
 *       writer's CLOCK_MONOTONIC timestamp in ns and the latency of the first
 *       event of each name is recorded.
 *   rawread setup <root> <mask>
 *       Walk <root> (directories only) adding one watch per directory,
 *       print READY and RESULT with time and VmRSS before/after, then keep
 *       the watches until stdin reaches EOF.
 *   All times are CLOCK_MONOTONIC nanoseconds, as Python's time.monotonic_ns().
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (1 << 20)

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long vm_rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static int die(const char *what) {
    perror(what);
    return 2;
}

/* ---- stream mode ------------------------------------------------------ */

static int run_stream(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr, "stream: wrong number of arguments\n");
        return 2;
    }
    const char *mode = argv[2];
    const char *dir = argv[3];
    uint32_t mask = (uint32_t)strtoul(argv[4], NULL, 0);
    long long expected = atoll(argv[5]);
    long long per_cycle = atoll(argv[6]);
    int64_t idle_ns = atoll(argv[7]) * 1000000LL;
    int64_t start_timeout_ns = atoll(argv[8]) * 1000000LL;
    int64_t hard_timeout_ns = atoll(argv[9]) * 1000000LL;
    int latency = strcmp(mode, "latency") == 0;

    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0) return die("inotify_init1");
    if (inotify_add_watch(fd, dir, mask) < 0) return die("inotify_add_watch");

    static char buf[BUF_SIZE] __attribute__((aligned(__alignof__(struct inotify_event))));
    int64_t *lat = NULL;
    size_t nlat = 0, caplat = 0;
    long long count = 0, overflows = 0, cycle = 0;
    long long next_cycle_mark = per_cycle > 0 ? per_cycle : -1;
    int64_t t_first = 0, t_last = 0;
    const char *reason = NULL;

    int64_t t_ready = now_ns();
    printf("READY %d\n", (int)getpid());
    fflush(stdout);
    int64_t last_progress = t_ready;

    while (!reason) {
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, 20);
        int64_t t = now_ns();
        if (r < 0 && errno != EINTR) return die("poll");
        if (r <= 0) {
            if (t - t_ready > hard_timeout_ns) reason = "hard-timeout";
            else if (count == 0 && t - t_ready > start_timeout_ns) reason = "start-timeout";
            else if (count > 0 && t - last_progress > idle_ns) reason = "idle";
            continue;
        }
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return die("read");
        }
        for (char *ptr = buf; ptr < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)ptr;
            ptr += sizeof(struct inotify_event) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                overflows++;
                continue;
            }
            if (ev->mask & IN_ISDIR) {
                reason = "sentinel";
                break;
            }
            if (latency && (ev->mask & IN_CREATE) && ev->len) {
                char *end;
                unsigned long long t0 = strtoull(ev->name, &end, 10);
                if (end != ev->name && *end == '\0') {
                    if (nlat == caplat) {
                        caplat = caplat ? caplat * 2 : 256;
                        lat = realloc(lat, caplat * sizeof *lat);
                        if (!lat) return die("realloc");
                    }
                    lat[nlat++] = now_ns() - (int64_t)t0;
                }
            }
            count++;
            if (count == next_cycle_mark) {
                printf("CYCLE %lld %lld\n", cycle, (long long)now_ns());
                fflush(stdout);
                cycle++;
                next_cycle_mark += per_cycle;
            }
        }
        t_last = now_ns();
        if (!t_first && count) t_first = t;
        last_progress = t_last;
        if (count >= expected) reason = "complete";
    }
    printf("RESULT {\"received\": %lld, \"overflows\": %lld, \"reason\": \"%s\", "
           "\"t_ready\": %lld, \"t_first\": %lld, \"t_last\": %lld, \"latencies_ns\": [",
           count, overflows, reason, (long long)t_ready, (long long)t_first, (long long)t_last);
    for (size_t i = 0; i < nlat; i++) printf(i ? ", %lld" : "%lld", (long long)lat[i]);
    printf("]}\n");
    fflush(stdout);
    free(lat);
    return 0;
}

/* ---- setup mode ------------------------------------------------------- */

static long long add_tree(int fd, char *path, size_t len, uint32_t mask) {
    long long watches = 0;
    if (inotify_add_watch(fd, path, mask) < 0) {
        perror(path);
        return -1;
    }
    watches++;
    DIR *d = opendir(path);
    if (!d) return watches;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_type != DT_DIR) continue;
        if (de->d_name[0] == '.' && (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2])))
            continue;
        size_t nlen = strlen(de->d_name);
        if (len + 1 + nlen + 1 > 4096) continue;
        path[len] = '/';
        memcpy(path + len + 1, de->d_name, nlen + 1);
        long long sub = add_tree(fd, path, len + 1 + nlen, mask);
        path[len] = '\0';
        if (sub < 0) {
            closedir(d);
            return -1;
        }
        watches += sub;
    }
    closedir(d);
    return watches;
}

static int run_setup(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "setup: wrong number of arguments\n");
        return 2;
    }
    char path[4096];
    size_t len = strlen(argv[2]);
    if (len >= sizeof path) return 2;
    memcpy(path, argv[2], len + 1);
    uint32_t mask = (uint32_t)strtoul(argv[3], NULL, 0);
    long rss0 = vm_rss_kb();
    int64_t t0 = now_ns();
    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0) return die("inotify_init1");
    long long watches = add_tree(fd, path, len, mask);
    int64_t t1 = now_ns();
    long rss1 = vm_rss_kb();
    if (watches < 0) return 2;
    printf("READY %d\n", (int)getpid());
    printf("RESULT {\"setup_ns\": %lld, \"rss_before_kb\": %ld, \"rss_after_kb\": %ld, "
           "\"watches_added\": %lld}\n",
           (long long)(t1 - t0), rss0, rss1, watches);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "stream") == 0) return run_stream(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "setup") == 0) return run_setup(argc, argv);
    fprintf(stderr, "usage: rawread stream|setup ...\n");
    return 2;
}
