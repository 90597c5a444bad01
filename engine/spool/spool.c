/* placeholder: replaced by the spool module */
