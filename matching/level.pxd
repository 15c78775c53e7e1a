# C-level declarations for compiling level.py (see README, "Compiled matching"); level.py stays the source.
cimport cython


@cython.final
cdef class Entry:
    # Python objects, not C ints: ints of any size, and an account id of any type, behave as uncompiled.
    cdef public object order_id, account, side, price, qty, post_only, stp

    cpdef copy(self)


@cython.final
cdef class Level:
    cdef public object price, total, orders
    cdef public Py_ssize_t dead

    cpdef append(self, Entry order)
    cpdef drop(self, Entry order)
    cpdef compact_if_sparse(self)
    cpdef list open_orders(self)
