"""dwrec.report"""
