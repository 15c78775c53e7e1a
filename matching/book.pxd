# C-level declarations for compiling book.py (see README, "Compiled matching"); book.py stays the source.
# Arguments stay untyped objects: the book itself rejects wrong types with a Rejected event. What is typed are
# the book's own objects, so that their attributes and methods are reached directly instead of by name.
cimport cython

from matching.level cimport Entry, Level
from matching.side cimport BookSide


@cython.final
cdef class OrderBook:
    cdef public object tick
    # Readable from Python: tests break a level through them to see ``check`` catch it.
    cdef readonly dict _orders
    cdef readonly BookSide _bids, _asks

    @cython.locals(own=BookSide, level=Level, order=Entry, crosses=bint, odd=bint)
    cpdef list limit(self, seq, ts, order_id, account, side, price, qty, tif=*, post_only=*, stp=*)
    cpdef list market(self, seq, ts, order_id, account, side, qty, stp=*)
    cpdef list buy_with_budget(self, seq, ts, order_id, account, budget, stp=*)
    @cython.locals(order=Entry, book_side=BookSide, level=Level, dead=Py_ssize_t)
    cpdef list cancel(self, seq, ts, order_id)
    @cython.locals(order=Entry, moved=Entry, level=Level, crosses=bint)
    cpdef list amend(self, seq, ts, order_id, price=*, qty=*)

    cdef _limit_rejection(self, order_id, side, price, qty, tif, post_only, stp)
    cdef _invalid_new(self, order_id, side, qty, stp)
    cdef bint _crosses(self, side, price)
    @cython.locals(opposite=BookSide, maker=Entry)
    cdef bint _fillable(self, account, side, limit, qty, stp)
    @cython.locals(opposite=BookSide, levels=dict, orders=dict, level=Level, maker=Entry, first=Entry,
                   stop=bint)
    cdef _match(self, list events, seq, ts, order_id, account, side, limit, left, bint by_budget, stp)
    # cpdef: ``rebuild``, a classmethod, calls it on a book it holds as a plain object.
    @cython.locals(own=BookSide, level=Level, order=Entry)
    cpdef _rest(self, order_id, account, side, price, qty, post_only, stp)
    @cython.locals(own=BookSide, level=Level)
    cdef _remove(self, Entry order)
