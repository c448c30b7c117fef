// JDBC (pgjdbc) through pgburrow: one JVM run does every check of the compatibility matrix,
// because starting the JVM is the slow part. Run as a single-file program:
//   java -cp /usr/share/java/postgresql.jar Compat.java JDBC_URL USER [JDBC_URL_WITHOUT_CERT]
// Prints "ok <check>" per check and exits 1 at the first failure with its reason; the cancel
// result is printed as "cancel sqlstate=... ms_after_cancel=..." for the test to judge.
import java.io.ByteArrayInputStream;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public class Compat {
    static void check(boolean ok, String what) {
        if (!ok)
            throw new AssertionError(what);
        System.out.println("ok " + what);
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        Properties p = new Properties();
        p.setProperty("user", args[1]);
        p.setProperty("prepareThreshold", "1"); // the 2nd execution uses a named server statement
        // Route selection as README.md shows it for JDBC (the "options" startup parameter).
        try (Connection c = DriverManager.getConnection(url + "&options=-c%20pgburrow.route=a", p);
             Statement s = c.createStatement();
             ResultSet r = s.executeQuery("select current_setting('pgburrow.route', true)")) {
            check(r.next() && "a".equals(r.getString(1)), "route option");
        }
        if (args.length > 2) {
            // The same connection without the client certificate: the relay must refuse it.
            try (Connection c = DriverManager.getConnection(args[2], p)) {
                System.out.println("no-cert accepted");
            } catch (SQLException e) {
                System.out.println("no-cert rejected sqlstate=" + e.getSQLState() + " " + e.getMessage());
            }
        }
        try (Connection c = DriverManager.getConnection(url, p)) {
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("select 40 + 2")) {
                check(r.next() && r.getInt(1) == 42, "simple query");
            }
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("select pg_backend_pid()")) {
                // the pid PostgreSQL sent in BackendKeyData, as the driver reports it
                check(r.next() && r.getInt(1) == c.unwrap(PGConnection.class).getBackendPID(), "backend pid");
            }
            try (Statement s = c.createStatement();
                 ResultSet r = s.executeQuery("select ssl from pg_stat_ssl where pid = pg_backend_pid()")) {
                // PostgreSQL sees the agent's local connection, not the client's TLS.
                check(r.next(), "pg_stat_ssl row");
            }
            try (PreparedStatement ps = c.prepareStatement("select ?::int * 2, ?::text")) {
                for (int i = 1; i <= 3; i++) {
                    ps.setInt(1, 20 + i);
                    ps.setString(2, "x" + i);
                    try (ResultSet r = ps.executeQuery()) {
                        check(r.next() && r.getInt(1) == 2 * (20 + i) && r.getString(2).equals("x" + i),
                              "extended query " + i);
                    }
                }
            }
            try (Statement s = c.createStatement();
                 ResultSet r = s.executeQuery("select count(*) from pg_prepared_statements where not from_sql")) {
                check(r.next() && r.getInt(1) >= 1, "prepared statement on the server");
            }
            CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
            try (Statement s = c.createStatement()) {
                s.execute("create temp table jdbc_copy (a int, b text)");
            }
            StringBuilder in = new StringBuilder();
            for (int i = 1; i <= 1000; i++)
                in.append(i).append('\t').append("row ").append(i).append('\n');
            long n = cm.copyIn("COPY jdbc_copy FROM STDIN",
                               new ByteArrayInputStream(in.toString().getBytes(StandardCharsets.UTF_8)));
            check(n == 1000, "copy in");
            StringWriter out = new StringWriter();
            n = cm.copyOut("COPY (select a, b from jdbc_copy order by a) TO STDOUT", out);
            check(n == 1000 && out.toString().equals(in.toString()), "copy out");

            Statement sleeper = c.createStatement();
            Thread t = new Thread(() -> {
                try {
                    Thread.sleep(500);
                    sleeper.cancel();
                } catch (Exception e) {
                    e.printStackTrace();
                }
            });
            long t0 = System.nanoTime();
            t.start();
            String state = "none";
            try {
                sleeper.execute("select pg_sleep(30)");
            } catch (SQLException e) {
                state = e.getSQLState();
            }
            long ms = (System.nanoTime() - t0) / 1000000;
            t.join();
            // Reported, not checked here: the test asserts it separately (cancel is its own row).
            System.out.println("cancel sqlstate=" + state + " ms_after_cancel=" + (ms - 500));
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("select 1")) {
                System.out.println("after-cancel " + (r.next() && r.getInt(1) == 1 ? "usable" : "broken"));
            }
        }
    }
}
