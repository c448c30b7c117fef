#include "common/log.h"
#include "common/escape.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Process-wide settings: written at start-up/reload only (see header). */
static struct {
    enum log_level level;
    enum log_format format;
    const char *program;
    FILE *out;
    bool has_owner; /* log_set_file_owner */
    uid_t owner_uid;
    gid_t owner_gid;
} log_cfg = {LOG_INFO, LOG_TEXT, "pgburrow", NULL, false, 0, 0};

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const level_tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

int log_format_parse(const char *s, enum log_format *out)
{
    if (strcmp(s, "text") == 0)
        *out = LOG_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = LOG_JSON;
    else
        return -EINVAL;
    return 0;
}

void log_configure(enum log_level level, enum log_format format, const char *program)
{
    log_cfg.level = level;
    log_cfg.format = format;
    if (program)
        log_cfg.program = program;
}

void log_set_file_owner(uid_t uid, gid_t gid)
{
    log_cfg.has_owner = true;
    log_cfg.owner_uid = uid;
    log_cfg.owner_gid = gid;
}

int log_file_open(const char *path, mode_t mode, char *err, size_t cap)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a reader (it is refused below) */
    const int flags = O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    struct stat st;
    bool created = true;
    int fd, rc;

    fd = open(path, flags | O_CREAT | O_EXCL, mode);
    if (fd < 0 && errno == EEXIST) {
        created = false;
        fd = open(path, flags);
    }
    if (fd < 0) {
        rc = -errno;
        snprintf(err, cap, "cannot open \"%s\": %s", path,
                 rc == -ELOOP   ? "it is a symbolic link"
                 : rc == -ENXIO ? "not a regular file"
                                : strerror(-rc));
        return rc;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        snprintf(err, cap, "cannot open \"%s\": %s", path, strerror(-rc));
        goto fail;
    }
    rc = -EPERM;
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, cap, "cannot open \"%s\": not a regular file", path);
        goto fail;
    }
    if (st.st_nlink != 1) {
        snprintf(err, cap, "cannot open \"%s\": it has other hard links", path);
        goto fail;
    }
    if (st.st_uid != geteuid() && !(log_cfg.has_owner && st.st_uid == log_cfg.owner_uid)) {
        snprintf(err, cap, "cannot open \"%s\": owned by uid %u, not by this service's user", path,
                 (unsigned)st.st_uid);
        goto fail;
    }
    if (created && geteuid() == 0 && log_cfg.has_owner && log_cfg.owner_uid != 0 &&
        fchown(fd, log_cfg.owner_uid, log_cfg.owner_gid) < 0) {
        rc = -errno;
        snprintf(err, cap, "cannot give \"%s\" to the service user: %s", path, strerror(-rc));
        goto fail;
    }
    if ((st.st_mode & 0777 & ~mode) && fchmod(fd, st.st_mode & mode & 0777) < 0) {
        rc = -errno;
        snprintf(err, cap, "cannot narrow the mode of \"%s\": %s", path, strerror(-rc));
        goto fail;
    }
    if (fcntl(fd, F_SETFL, O_APPEND) < 0) { /* writes block as usual */
        rc = -errno;
        snprintf(err, cap, "cannot open \"%s\": %s", path, strerror(-rc));
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return rc;
}

/* log_open with the reason in err[cap]. */
static int open_out(const char *path, char *err, size_t cap)
{
    FILE *f = NULL;
    if (path) {
        int fd = log_file_open(path, 0640, err, cap);
        if (fd < 0)
            return fd;
        f = fdopen(fd, "a");
        if (!f) {
            int e = errno;
            snprintf(err, cap, "cannot open \"%s\": %s", path, strerror(e));
            close(fd);
            return -e;
        }
        setvbuf(f, NULL, _IOLBF, 0);
    }
    if (log_cfg.out)
        fclose(log_cfg.out);
    log_cfg.out = f;
    return 0;
}

int log_open(const char *path)
{
    char err[256];
    return open_out(path, err, sizeof(err));
}

bool log_enabled(enum log_level level)
{
    return level >= log_cfg.level;
}

void log_vmsg(enum log_level level, uint32_t tunnel, uint32_t stream, const char *fmt, va_list ap)
{
    char msg[2048], ts[96], ids[40] = "";
    struct timespec now;
    struct tm tm;
    FILE *out = log_cfg.out ? log_cfg.out : stderr;

    if (!log_enabled(level))
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    /* Messages carry strings peers chose (user names, SNI...): escaped here, once for every
     * caller, so that no input can start a line of its own or break the JSON. */
    char esc[sizeof(msg) * 2];
    escape_str(esc, sizeof(esc), msg, log_cfg.format == LOG_JSON ? ESCAPE_JSON : ESCAPE_TEXT);
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(now.tv_nsec / 1000000) % 1000);
    if (log_cfg.format == LOG_JSON) {
        fprintf(out, "{\"ts\":\"%s\",\"level\":\"%s\",\"program\":\"%s\"", ts, level_names[level],
                log_cfg.program);
        if (tunnel)
            fprintf(out, ",\"tunnel\":%u", tunnel);
        if (stream)
            fprintf(out, ",\"stream\":%u", stream);
        fprintf(out, ",\"msg\":\"%s\"}\n", esc);
    } else {
        if (tunnel && stream)
            snprintf(ids, sizeof(ids), "[t%u s%u] ", tunnel, stream);
        else if (tunnel)
            snprintf(ids, sizeof(ids), "[t%u] ", tunnel);
        fprintf(out, "%s %s %s%s\n", ts, level_tags[level], ids, esc);
    }
    fflush(out);
}

void log_msg(enum log_level level, uint32_t tunnel, uint32_t stream, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, tunnel, stream, fmt, ap);
    va_end(ap);
}

int log_apply(const char *level, const char *format, const char *file, const char *program,
              char *err, size_t cap)
{
    enum log_level lv = LOG_INFO;
    enum log_format fmt = LOG_TEXT;
    if (level && log_level_parse(level, &lv) < 0) {
        snprintf(err, cap, "log_level: unknown level \"%s\"", level);
        return -EINVAL;
    }
    if (format && log_format_parse(format, &fmt) < 0) {
        snprintf(err, cap, "log_format: unknown format \"%s\"", format);
        return -EINVAL;
    }
    log_configure(lv, fmt, program);
    if (file && file[0]) {
        char why[256];
        if (open_out(file, why, sizeof(why)) < 0) {
            snprintf(err, cap, "log_file: %s", why);
            return -EINVAL;
        }
    }
    return 0;
}

void log_reconfigure(const char *level, const char *format)
{
    enum log_level lv = LOG_INFO;
    enum log_format fmt = LOG_TEXT;

    if (level)
        log_level_parse(level, &lv);
    if (format)
        log_format_parse(format, &fmt);
    log_configure(lv, fmt, NULL);
}
