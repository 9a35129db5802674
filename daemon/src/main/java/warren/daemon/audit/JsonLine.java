package warren.daemon.audit;

import java.util.Base64;

/**
 * Builds one JSON object on one line, fields in insertion order. Strings are escaped per
 * RFC 8259 (quotes, backslash, control characters; everything else as UTF-16 text), bytes are
 * base64, nested objects are JsonLines. Small on purpose: audit lines are flat records.
 */
public final class JsonLine {
    private final StringBuilder sb = new StringBuilder(256).append('{');
    private boolean first = true;

    private JsonLine key(String k) {
        if (!first) {
            sb.append(',');
        }
        first = false;
        quote(sb, k);
        sb.append(':');
        return this;
    }

    public JsonLine put(String k, String v) {
        key(k);
        if (v == null) {
            sb.append("null");
        } else {
            quote(sb, v);
        }
        return this;
    }

    public JsonLine put(String k, long v) {
        key(k).sb.append(v);
        return this;
    }

    public JsonLine put(String k, double v) {
        key(k);
        if (Double.isFinite(v)) {
            sb.append(v);
        } else {
            sb.append("null");
        }
        return this;
    }

    public JsonLine put(String k, boolean v) {
        key(k).sb.append(v);
        return this;
    }

    public JsonLine put(String k, JsonLine nested) {
        key(k).sb.append(nested.toString());
        return this;
    }

    public JsonLine putBase64(String k, byte[] v) {
        return put(k, v.length == 0 ? "" : Base64.getEncoder().encodeToString(v));
    }

    /** Appends every field of {@code other} (a fragment built for this line). */
    public JsonLine merge(JsonLine other) {
        if (other == null || other.first) {
            return this;
        }
        if (!first) {
            sb.append(',');
        }
        first = false;
        sb.append(other.sb, 1, other.sb.length());
        return this;
    }

    /** Appends {@code s} as a JSON string (RFC 8259 escapes); shared with the CLI's --json output. */
    public static void quote(StringBuilder sb, String s) {
        sb.append('"');
        int plain = 0; // the common case: nothing to escape, appended at once
        while (plain < s.length() && !escaped(s.charAt(plain))) {
            plain++;
        }
        sb.append(s, 0, plain);
        for (int i = plain; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                default:
                    if (c < 0x20 || c == 0x2028 || c == 0x2029) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
            }
        }
        sb.append('"');
    }

    /** Characters {@link #quote} does not append as they are. */
    private static boolean escaped(char c) {
        return c < 0x20 || c == '"' || c == '\\' || c == 0x2028 || c == 0x2029;
    }

    @Override
    public String toString() {
        return sb.toString() + '}';
    }
}
