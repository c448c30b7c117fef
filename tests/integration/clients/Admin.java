// JDBC (pgjdbc) against the relay's admin console (tests/integration/test_admin.py):
//   java -cp /usr/share/java/postgresql.jar Admin.java JDBC_URL USER
// Prints "ok <check>" per check and exits 1 at the first failure with its reason.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class Admin {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", args[1]);
        p.setProperty("prepareThreshold", "1"); // the 2nd execution uses a named statement
        try (Connection c = DriverManager.getConnection(args[0], p)) {
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SHOW VERSION")) {
                if (!r.next())
                    throw new AssertionError("SHOW VERSION: no row");
                System.out.println("ok show version " + r.getString("version"));
            }
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("show routes;")) {
                StringBuilder names = new StringBuilder();
                while (r.next()) {
                    if (names.length() > 0)
                        names.append(',');
                    names.append(r.getString("route"));
                    r.getLong("tunnels");
                }
                System.out.println("ok show routes " + names);
            }
            try (PreparedStatement ps = c.prepareStatement("SHOW STATS")) {
                for (int i = 0; i < 3; i++) {
                    try (ResultSet r = ps.executeQuery()) {
                        boolean found = false;
                        while (r.next())
                            found |= r.getString("name").equals("sessions") && r.getLong("value") >= 0;
                        if (!found)
                            throw new AssertionError("SHOW STATS: no sessions row");
                    }
                }
                System.out.println("ok prepared show stats");
            }
            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT 1");
                throw new AssertionError("SELECT 1 accepted");
            } catch (SQLException e) {
                System.out.println("ok unknown command " + e.getSQLState());
            }
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SHOW TUNNELS")) {
                while (r.next())
                    r.getString("agent");
                System.out.println("ok usable after an error");
            }
        }
    }
}
