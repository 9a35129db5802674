/**
 * conntrack over netlink (ctnetlink) from Java, for Fish's port reservations: create-exclusive
 * entries, read-back, delete. See {@link warren.fish.conntrack.Ctnetlink}.
 */
package warren.fish.conntrack;
