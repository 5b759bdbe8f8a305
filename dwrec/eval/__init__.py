"""dwrec.eval"""
