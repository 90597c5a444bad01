/* placeholder: replaced by the policy module */
