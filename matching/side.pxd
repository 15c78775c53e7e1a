# C-level declarations for compiling side.py (see README, "Compiled matching"); side.py stays the source.
cimport cython

from matching.level cimport Level


@cython.final
cdef class BookSide:
    cdef public bint is_bid
    cdef public dict levels
    cdef public object prices, best
    cdef public set stale

    @cython.locals(level=Level)
    cpdef Level open_level(self, price)
    @cython.locals(stale=set, end=Py_ssize_t)
    cpdef close_level(self, price)
