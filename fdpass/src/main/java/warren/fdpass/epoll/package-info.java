/** epoll(7) with a preallocated event array and an eventfd wakeup; one loop thread owns it. */
package warren.fdpass.epoll;
