/** Bumblebee: raw IP flows upgraded to kernel TCP/UDP sockets through a TUN (the Bumblebee issue). */
package warren.bumblebee;
