"""dwrec.train"""
