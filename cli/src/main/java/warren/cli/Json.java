package warren.cli;

import java.util.Map;

/**
 * A JSON value written on one line (RFC 8259): objects keep insertion order, strings are escaped,
 * numbers stay numbers (a uint64 counter prints as digits, not as the string protobuf's JSON
 * mapping makes of it), so {@code jq} and scripts read {@code --json} output directly.
 */
final class Json {
    private final StringBuilder sb = new StringBuilder(256);
    private boolean needComma;

    static Json object() {
        return new Json().open('{');
    }

    static Json array() {
        return new Json().open('[');
    }

    private Json open(char c) {
        sb.append(c);
        needComma = false;
        return this;
    }

    private Json key(String k) {
        comma();
        quote(k);
        sb.append(':');
        needComma = false;
        return this;
    }

    private void comma() {
        if (needComma) {
            sb.append(',');
        }
        needComma = true;
    }

    Json put(String k, String v) {
        key(k).quote(v);
        needComma = true;
        return this;
    }

    Json put(String k, long v) {
        key(k).sb.append(v);
        needComma = true;
        return this;
    }

    /** An unsigned 64-bit value (protobuf uint64), printed as its unsigned digits. */
    Json putUnsigned(String k, long v) {
        key(k).sb.append(Long.toUnsignedString(v));
        needComma = true;
        return this;
    }

    Json put(String k, boolean v) {
        key(k).sb.append(v);
        needComma = true;
        return this;
    }

    /** A nested object or array, closed. */
    Json put(String k, Json v) {
        key(k).sb.append(v.close());
        needComma = true;
        return this;
    }

    Json put(String k, Map<String, Long> counters) {
        Json o = object();
        counters.forEach(o::putUnsigned);
        return put(k, o);
    }

    /** An array element. */
    Json add(Json v) {
        comma();
        sb.append(v.close());
        return this;
    }

    private String close() {
        char open = sb.charAt(0);
        return sb.toString() + (open == '{' ? '}' : ']');
    }

    private Json quote(String s) {
        warren.daemon.audit.JsonLine.quote(sb, s);
        return this;
    }

    @Override
    public String toString() {
        return close();
    }
}
