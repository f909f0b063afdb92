package interop;

import java.math.BigDecimal;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.apache.flink.table.api.EnvironmentSettings;
import org.apache.flink.table.api.TableEnvironment;
import org.apache.flink.table.api.TableResult;
import org.apache.flink.types.Row;
import org.apache.flink.types.RowKind;
import org.apache.flink.util.CloseableIterator;

/**
 * Runs the SQL statements of a file (separated by lines holding only ";") in a local Flink
 * mini-cluster, in streaming mode. Every statement but the last is executed as is (CREATE TABLE
 * ...), or sets a table option (SET 'key' = 'value'); the last is a query over a changelog source (debezium-json) that must end (a bounded Kafka
 * scan). The runner applies the changelog the query emits to a table keyed by its first column and
 * prints, on standard output: one line {"changes": {"+I": n, "-U": n, "+U": n, "-D": n}}, then one
 * JSON object per remaining row, column name to value. Any failure (a parse error of the format
 * among them) ends it with exit status 1 and the error on standard error.
 *
 * <p>Usage: java -cp "classes:libs/*" interop.FlinkSql query.sql
 */
public final class FlinkSql {
  public static void main(String[] args) throws Exception {
    String text = Files.readString(Path.of(args[0]));
    List<String> statements = new ArrayList<>();
    for (String part : text.split("(?m)^;\\s*$")) {
      if (!part.isBlank()) statements.add(part.trim());
    }
    TableEnvironment env = TableEnvironment.create(EnvironmentSettings.inStreamingMode());
    env.getConfig().set("parallelism.default", "1");
    java.util.regex.Pattern set = java.util.regex.Pattern.compile("(?is)SET\\s+'([^']+)'\\s*=\\s*'([^']*)'");
    for (String ddl : statements.subList(0, statements.size() - 1)) {
      java.util.regex.Matcher option = set.matcher(ddl);
      if (option.matches()) {
        env.getConfig().set(option.group(1), option.group(2));
      } else {
        env.executeSql(ddl);
      }
    }
    TableResult result = env.executeSql(statements.get(statements.size() - 1));
    List<String> columns = result.getResolvedSchema().getColumnNames();
    Map<String, Long> kinds = new LinkedHashMap<>();
    Map<Object, Row> table = new LinkedHashMap<>();
    try (CloseableIterator<Row> rows = result.collect()) {
      while (rows.hasNext()) {
        Row row = rows.next();
        RowKind kind = row.getKind();
        kinds.merge(kind.shortString(), 1L, Long::sum);
        Object key = row.getField(0);
        switch (kind) {
          case INSERT:
          case UPDATE_AFTER:
            table.put(key, row);
            break;
          case UPDATE_BEFORE:
          case DELETE:
            table.remove(key);
            break;
          default:
            break;
        }
      }
    }
    StringBuilder out = new StringBuilder("{\"changes\": {");
    int i = 0;
    for (Map.Entry<String, Long> e : kinds.entrySet()) {
      if (i++ > 0) out.append(", ");
      out.append(json(e.getKey())).append(": ").append(e.getValue());
    }
    System.out.println(out.append("}}"));
    for (Row row : table.values()) {
      StringBuilder line = new StringBuilder("{");
      for (int c = 0; c < columns.size(); c++) {
        if (c > 0) line.append(", ");
        line.append(json(columns.get(c))).append(": ").append(value(row.getField(c)));
      }
      System.out.println(line.append("}"));
    }
    System.exit(0);
  }

  private static String value(Object v) {
    if (v == null) return "null";
    if (v instanceof Boolean || v instanceof Integer || v instanceof Long || v instanceof Short
        || v instanceof Byte) {
      return v.toString();
    }
    if (v instanceof Double || v instanceof Float) {
      double d = ((Number) v).doubleValue();
      return Double.isFinite(d) ? v.toString() : json(v.toString());
    }
    if (v instanceof BigDecimal) return ((BigDecimal) v).toPlainString();
    if (v instanceof Row) {
      Row row = (Row) v;
      StringBuilder out = new StringBuilder("[");
      for (int i = 0; i < row.getArity(); i++) {
        if (i > 0) out.append(", ");
        out.append(value(row.getField(i)));
      }
      return out.append("]").toString();
    }
    if (v instanceof Object[]) {
      StringBuilder out = new StringBuilder("[");
      Object[] items = (Object[]) v;
      for (int i = 0; i < items.length; i++) {
        if (i > 0) out.append(", ");
        out.append(value(items[i]));
      }
      return out.append("]").toString();
    }
    return json(v.toString());
  }

  private static String json(String s) {
    StringBuilder out = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') out.append('\\').append(c);
      else if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
      else out.append(c);
    }
    return out.append('"').toString();
  }
}
