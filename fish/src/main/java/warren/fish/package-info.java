/** Fish: L3 egress from a soft-unicast IP and port range, reserved in conntrack (the Fish issue). */
package warren.fish;
