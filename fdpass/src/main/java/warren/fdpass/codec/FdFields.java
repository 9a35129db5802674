package warren.fdpass.codec;

import com.google.protobuf.Descriptors.Descriptor;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.Message;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Finds the fd-index fields of a protobuf message: every uint32 field named {@code fd_*}, at any
 * depth. Fields with explicit presence ({@code optional}, oneof members) count only when set; the
 * others always count (proto3 cannot tell 0 from unset). The per-type plan is computed once.
 */
public final class FdFields {
    private FdFields() {}

    /** One fd reference: where it is (for error messages) and which attached fd it names. */
    public record Ref(String path, long index) {}

    private record Plan(List<FieldDescriptor> fdFields, List<FieldDescriptor> messageFields) {}

    private static final Map<Descriptor, Plan> PLANS = new ConcurrentHashMap<>();

    public static boolean isFdField(FieldDescriptor f) {
        return f.getName().startsWith("fd_") && f.getType() == FieldDescriptor.Type.UINT32;
    }

    /** Every fd reference in {@code m}, in field order. */
    public static List<Ref> collect(Message m) {
        List<Ref> out = new ArrayList<>(2);
        collect(m, "", out);
        return out;
    }

    private static void collect(Message m, String prefix, List<Ref> out) {
        Plan plan = PLANS.computeIfAbsent(m.getDescriptorForType(), FdFields::plan);
        for (FieldDescriptor f : plan.fdFields) {
            String path = prefix + f.getName();
            if (f.isRepeated()) {
                int n = m.getRepeatedFieldCount(f);
                for (int i = 0; i < n; i++) {
                    out.add(new Ref(path + "[" + i + "]", Integer.toUnsignedLong((Integer) m.getRepeatedField(f, i))));
                }
            } else if (!f.hasPresence() || m.hasField(f)) {
                out.add(new Ref(path, Integer.toUnsignedLong((Integer) m.getField(f))));
            }
        }
        for (FieldDescriptor f : plan.messageFields) {
            String path = prefix + f.getName();
            if (f.isRepeated()) {
                int n = m.getRepeatedFieldCount(f);
                for (int i = 0; i < n; i++) {
                    collect((Message) m.getRepeatedField(f, i), path + "[" + i + "].", out);
                }
            } else if (m.hasField(f)) {
                collect((Message) m.getField(f), path + ".", out);
            }
        }
    }

    private static Plan plan(Descriptor d) {
        List<FieldDescriptor> fds = new ArrayList<>();
        List<FieldDescriptor> msgs = new ArrayList<>();
        for (FieldDescriptor f : d.getFields()) {
            if (isFdField(f)) {
                fds.add(f);
            } else if (f.getJavaType() == FieldDescriptor.JavaType.MESSAGE && mayHoldFds(f.getMessageType(), new ArrayList<>())) {
                msgs.add(f);
            }
        }
        return new Plan(List.copyOf(fds), List.copyOf(msgs));
    }

    private static boolean mayHoldFds(Descriptor d, List<Descriptor> seen) {
        if (seen.contains(d)) {
            return false;
        }
        seen.add(d);
        for (FieldDescriptor f : d.getFields()) {
            if (isFdField(f)) {
                return true;
            }
            if (f.getJavaType() == FieldDescriptor.JavaType.MESSAGE && mayHoldFds(f.getMessageType(), seen)) {
                return true;
            }
        }
        return false;
    }
}
