#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Process-wide settings: written at start-up/reload only (see header). */
static struct {
    enum log_level level;
    enum log_format format;
    const char *program;
    FILE *out;
} log_cfg = {LOG_INFO, LOG_TEXT, "pgburrow", NULL};

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

int log_open(const char *path)
{
    FILE *f = NULL;
    if (path) {
        f = fopen(path, "ae");
        if (!f)
            return -errno;
        setvbuf(f, NULL, _IOLBF, 0);
    }
    if (log_cfg.out)
        fclose(log_cfg.out);
    log_cfg.out = f;
    return 0;
}

bool log_enabled(enum log_level level)
{
    return level >= log_cfg.level;
}

/* Append s to buf as a JSON string body (no quotes). */
static size_t json_escape(char *buf, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)ch;
        } else if (ch < 0x20) {
            n += (size_t)snprintf(buf + n, cap - n, "\\u%04x", ch);
        } else {
            buf[n++] = (char)ch;
        }
    }
    buf[n] = '\0';
    return n;
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
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(now.tv_nsec / 1000000) % 1000);
    if (log_cfg.format == LOG_JSON) {
        char esc[sizeof(msg) * 2];
        json_escape(esc, sizeof(esc), msg);
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
        fprintf(out, "%s %s %s%s\n", ts, level_tags[level], ids, msg);
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
              char *err)
{
    enum log_level lv = LOG_INFO;
    enum log_format fmt = LOG_TEXT;
    if (level && log_level_parse(level, &lv) < 0) {
        snprintf(err, 512, "log_level: unknown level \"%s\"", level);
        return -EINVAL;
    }
    if (format && log_format_parse(format, &fmt) < 0) {
        snprintf(err, 512, "log_format: unknown format \"%s\"", format);
        return -EINVAL;
    }
    log_configure(lv, fmt, program);
    if (file && file[0] && log_open(file) < 0) {
        snprintf(err, 512, "cannot open log_file \"%s\"", file);
        return -EINVAL;
    }
    return 0;
}
